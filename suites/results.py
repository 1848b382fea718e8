"""What checkers return: fault windows and fences they take, violations, per-check results, the verdict."""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from suites.history import Operation, jsonable

SHOWN_VIOLATIONS = 20
# Windows of these kinds are pauses in a plan, not faults (FIS aws:fis:wait).
SKIP_KINDS = ("wait",)


@dataclass(frozen=True)
class Window:
    """A fault window in monotonic seconds (as ``FaultEvent.start_mono`` / ``end_mono``)."""

    name: str
    start: float
    end: float | None = None
    kind: str = "fault"
    target: str = ""
    effective: float | None = None  # when the fault had taken effect, if recorded

    @property
    def bites(self) -> float:
        """From when on operations feel the fault: its effective time, else its start."""
        return self.start if self.effective is None else max(self.start, self.effective)

    @classmethod
    def of(cls, obj: Any) -> Window:
        """From a ``FaultEvent``, a ``Timeline.to_list()`` dict, a Window, or a (start, end) pair."""
        if isinstance(obj, Window):
            return obj
        if isinstance(obj, tuple | list) and len(obj) == 2:
            return cls(name="window", start=float(obj[0]), end=None if obj[1] is None else float(obj[1]))
        get = obj.get if isinstance(obj, Mapping) else lambda k, d=None: getattr(obj, k, d)
        start = get("start_mono")
        if start is None:
            raise ValueError(f"fault window {obj!r} has no start_mono (pass Timeline.to_list() items)")
        end = get("end_mono")
        effective = get("injected_mono")
        return cls(name=str(get("name", "fault")), start=float(start), end=None if end is None else float(end),
                   kind=str(get("kind", "fault")), target=str(get("target", "") or ""),
                   effective=None if effective is None else float(effective))

    def label(self, t0: float = 0.0) -> str:
        end = "still active" if self.end is None else f"t={self.end - t0:.3f}s"
        target = f" on {self.target}" if self.target else ""
        return f"fault {self.name}{target} (t={self.start - t0:.3f}s..{end})"


def windows(faults: Iterable[Any] | None, *, skip_kinds: Collection[str] = SKIP_KINDS) -> list[Window]:
    """Fault windows sorted by start, without plan pauses (``aws:fis:wait``)."""
    wins = [Window.of(f) for f in faults or ()]
    return sorted((w for w in wins if w.kind not in skip_kinds), key=lambda w: w.start)


@dataclass(frozen=True)
class Fence:
    """``node`` (an address or instance id, as recorded in ops' ``node``) was fenced at ``time`` (monotonic)."""

    node: str
    time: float
    name: str = "fence"

    @classmethod
    def of(cls, obj: Any) -> Fence:
        if isinstance(obj, Fence):
            return obj
        if isinstance(obj, Operation):
            node = obj.node or obj.value
            return cls(node=str(node), time=obj.invoke_time, name=obj.f)
        if isinstance(obj, Mapping):
            return cls(node=str(obj["node"]), time=float(obj["time"]), name=str(obj.get("name", "fence")))
        raise ValueError(f"a fence is Fence(node, time) or {{'node': ..., 'time': ...}}, got {obj!r}")


@dataclass
class Violation:
    """What went wrong, and the operation it went wrong on (None for a history-level finding)."""

    what: str
    detail: str
    op: Operation | None = None

    def line(self) -> str:
        return f"{self.what}: {self.detail}" + (f" -- {self.op.describe()}" if self.op is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "detail": self.detail, "op": None if self.op is None else self.op.to_dict()}


@dataclass
class CheckResult:
    """One checker's verdict as plain data. ``skipped`` says why a checker did not apply."""

    name: str
    valid: bool
    summary: str
    violations: list[Violation] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def message(self) -> str:
        lines = [f"{self.name}: {self.summary}"]
        lines += [f"  - {v.line()}" for v in self.violations[:SHOWN_VIOLATIONS]]
        if len(self.violations) > SHOWN_VIOLATIONS:
            lines.append(f"  ... and {len(self.violations) - SHOWN_VIOLATIONS} more")
        return "\n".join(lines)

    def assert_valid(self) -> CheckResult:
        """Raise an AssertionError naming every violating operation; return self when valid."""
        if not self.valid:
            raise AssertionError(self.message())
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "valid": self.valid, "summary": self.summary, "skipped": self.skipped,
                "numbers": jsonable(self.numbers), "violations": [v.to_dict() for v in self.violations]}


@dataclass
class Verdict:
    """Every checker's result; valid when all are."""

    results: list[CheckResult]

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.results)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.valid]

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no check named {name!r}; have {[r.name for r in self.results]}")

    def message(self) -> str:
        if self.valid:
            ran = [r.name for r in self.results if r.skipped is None]
            return f"all checks passed ({', '.join(ran) or 'none ran'})"
        return "\n".join(r.message() for r in self.failed)

    def assert_valid(self) -> Verdict:
        if not self.valid:
            raise AssertionError(f"{len(self.failed)} of {len(self.results)} checks failed:\n{self.message()}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "message": self.message(), "results": [r.to_dict() for r in self.results]}
