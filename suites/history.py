"""Jepsen-style operation history: every client op is an invoke then ok / fail / info, recorded thread-safely."""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

logger = logging.getLogger(__name__)

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
PENDING = "pending"
COMPLETIONS = (OK, FAIL, INFO)
TYPES = (INVOKE, *COMPLETIONS)
NEMESIS = "nemesis"

# Bugs in the drill itself must not be recorded as "the database failed" and swallowed.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (AssertionError, NameError, AttributeError, TypeError)
DEFAULT_FAIL_ON: tuple[type[BaseException], ...] = (ConnectionRefusedError,)

Classifier = Callable[[BaseException], "str | None"]
_UNSET: Any = object()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def jsonable(value: Any) -> Any:
    """``value`` made JSON-friendly: sets become sorted lists, tuples lists, unknown objects their repr."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        items = [jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


@dataclass(frozen=True)
class Event:
    """One line of the history. ``time`` is ``time.monotonic()`` (comparable with fault timeline
    ``start_mono``), ``wall`` the epoch. Invoke and completion of one operation share ``id``."""

    index: int
    id: int
    type: str
    process: int | str
    f: str
    value: Any
    time: float
    wall: float
    endpoint: str | None = None
    node: str | None = None
    error: str | None = None
    latency: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "index": self.index, "id": self.id, "type": self.type, "process": self.process, "f": self.f,
            "value": jsonable(self.value), "time": self.time, "wall": self.wall,
        }
        for key in ("endpoint", "node", "error", "latency"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.extra:
            d["extra"] = jsonable(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        missing = [k for k in ("index", "id", "type", "process", "f", "time") if k not in d]
        if missing:
            raise ValueError(f"history event {d!r} lacks {', '.join(missing)}")
        if d["type"] not in TYPES:
            raise ValueError(f"history event {d!r}: type must be one of {', '.join(TYPES)}")
        return cls(
            index=int(d["index"]), id=int(d["id"]), type=d["type"], process=d["process"], f=d["f"],
            value=d.get("value"), time=float(d["time"]), wall=float(d.get("wall", 0.0)),
            endpoint=d.get("endpoint"), node=d.get("node"), error=d.get("error"), latency=d.get("latency"),
            extra=dict(d.get("extra") or {}),
        )


@dataclass(frozen=True)
class Operation:
    """An invoke paired with its completion. ``type`` is ok / fail / info, or ``pending`` when the
    history ended before the op completed (treat like info). ``value`` is the completion's value when
    it gave one (a read's result), else the invoke's (a write's value)."""

    id: int
    process: int | str
    f: str
    type: str
    value: Any
    invoke_value: Any
    invoke_time: float
    complete_time: float | None
    wall: float
    endpoint: str | None = None
    node: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    t0: float = 0.0

    @property
    def latency(self) -> float | None:
        return None if self.complete_time is None else self.complete_time - self.invoke_time

    @property
    def ok(self) -> bool:
        return self.type == OK

    def describe(self) -> str:
        """One line naming the op for error messages: id, f, value, process, times, endpoint, node."""
        parts = [f"op #{self.id} {self.f} {_short(self.value)} by process {self.process} [{self.type}]",
                 f"invoked t={self.invoke_time - self.t0:.3f}s"]
        if self.complete_time is not None:
            parts.append(f"completed t={self.complete_time - self.t0:.3f}s")
        if self.endpoint or self.node:
            via = self.endpoint or ""
            if self.node and self.node != self.endpoint:
                via = f"{via} ({self.node})" if via else str(self.node)
            parts.append(f"via {via}")
        if self.error:
            parts.append(f"error {self.error!r}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "process": self.process, "f": self.f, "type": self.type, "value": jsonable(self.value),
            "invoke_time": self.invoke_time, "complete_time": self.complete_time,
            "t": round(self.invoke_time - self.t0, 6), "latency": self.latency, "endpoint": self.endpoint,
            "node": self.node, "error": self.error,
        }


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    if isinstance(value, set | frozenset | list | tuple) and len(text) > limit:
        return f"<{type(value).__name__} of {len(value)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OpHandle:
    """An invoked operation; complete it with ``ok`` / ``fail`` / ``info`` exactly once. As a context
    manager: an exception inside completes it as fail or info (by the history's classification) and is
    swallowed unless ``reraise``; a block that ends without completing it completes it ok."""

    def __init__(self, history: History, invoke: Event, *, fail_on: tuple[type[BaseException], ...] | None,
                 info_on: tuple[type[BaseException], ...] | None, reraise: bool | None) -> None:
        self.history = history
        self.invoke = invoke
        self.completion: Event | None = None
        self._fail_on = fail_on
        self._info_on = info_on
        self._reraise = reraise
        self._node: str | None = invoke.node

    @property
    def id(self) -> int:
        return self.invoke.id

    @property
    def done(self) -> bool:
        return self.completion is not None

    def set_node(self, node: str | None) -> None:
        """The node learned mid-operation (e.g. the address a DNS name resolved to at connect)."""
        self._node = node

    def ok(self, value: Any = _UNSET, **extra: Any) -> Event:
        return self._complete(OK, value, None, extra)

    def fail(self, error: BaseException | str | None = None, value: Any = _UNSET, **extra: Any) -> Event:
        """Definitely did not happen (refused before it reached the database, rolled back, ...)."""
        return self._complete(FAIL, value, error, extra)

    def info(self, error: BaseException | str | None = None, value: Any = _UNSET, **extra: Any) -> Event:
        """Outcome unknown (timeout, connection lost mid-commit): it may or may not have happened."""
        return self._complete(INFO, value, error, extra)

    def _complete(self, type_: str, value: Any, error: BaseException | str | None, extra: dict[str, Any]) -> Event:
        if self.completion is not None:
            raise RuntimeError(f"{self.invoke.f} op #{self.id} already completed as {self.completion.type}")
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        self.completion = self.history.record(
            self.invoke.process, self.invoke.f, type_, None if value is _UNSET else value, id=self.id,
            endpoint=self.invoke.endpoint, node=self._node, error=text, _invoke_time=self.invoke.time, **extra,
        )
        return self.completion

    def __enter__(self) -> OpHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is None:
            if self.completion is None:
                self.ok()
            return False
        if self.completion is None:
            kind = self.history.classify(exc, fail_on=self._fail_on, info_on=self._info_on)
            self._complete(kind, _UNSET, exc, {})
        if not isinstance(exc, Exception) or isinstance(exc, PROGRAMMING_ERRORS):
            return False
        reraise = self.history.reraise if self._reraise is None else self._reraise
        return not reraise


class History:
    """A thread-safe, append-only record of client operations during a drill.

    ``fail_on`` / ``info_on``: exception classes that mean "definitely did not happen" / "unknown"; the
    class nearest in the exception's MRO wins, anything unlisted is ``info`` (the safe assumption).
    ``classify(exc) -> "fail" | "info" | None`` is asked first when given."""

    def __init__(self, *, name: str = "", fail_on: Iterable[type[BaseException]] = DEFAULT_FAIL_ON,
                 info_on: Iterable[type[BaseException]] = (), classify: Classifier | None = None,
                 reraise: bool = False, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, t0: float | None = None) -> None:
        self.name = name
        self.fail_on = tuple(fail_on)
        self.info_on = tuple(info_on)
        self._classify = classify
        self.reraise = reraise
        self._clock = clock
        self._wall = wall_clock
        self.t0 = clock() if t0 is None else t0
        self._events: list[Event] = []
        self._tally = {INVOKE: 0, OK: 0, FAIL: 0, INFO: 0}  # client ops only, for cheap progress lines
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # -- recording ----------------------------------------------------------------------------------
    def record(self, process: int | str, f: str, type: str, value: Any = None, *, id: int | None = None,
               time: float | None = None, wall: float | None = None, endpoint: str | None = None,
               node: str | None = None, error: str | None = None, latency: float | None = None,
               _invoke_time: float | None = None, **extra: Any) -> Event:
        """Append one event. A completion needs the ``id`` of its invoke; an invoke without ``id``
        gets a fresh one. ``time`` defaults to now (monotonic), ``wall`` to now (epoch)."""
        if type not in TYPES:
            raise ValueError(f"event type must be one of {', '.join(TYPES)}, got {type!r}")
        if type != INVOKE and id is None:
            raise ValueError(f"a {type} completion needs the id of its invoke (id=...)")
        with self._lock:
            now = self._clock() if time is None else time
            if type != INVOKE and latency is None:
                start = _invoke_time if _invoke_time is not None else self._invoke_time(id)
                latency = None if start is None else now - start
            ev = Event(
                index=len(self._events), id=next(self._ids) if id is None else id, type=type, process=process,
                f=f, value=value, time=now, wall=self._wall() if wall is None else wall, endpoint=endpoint,
                node=node, error=error, latency=latency, extra=extra,
            )
            self._events.append(ev)
            if process != NEMESIS:
                self._tally[type] += 1
        return ev

    def _invoke_time(self, id: int | None) -> float | None:
        for ev in reversed(self._events):
            if ev.id == id and ev.type == INVOKE:
                return ev.time
        return None

    def invoke(self, process: int | str, f: str, value: Any = None, *, endpoint: str | None = None,
               node: str | None = None, fail_on: Iterable[type[BaseException]] | None = None,
               info_on: Iterable[type[BaseException]] | None = None, reraise: bool | None = None,
               **extra: Any) -> OpHandle:
        """Record an invoke; complete the returned handle with ``ok`` / ``fail`` / ``info``."""
        ev = self.record(process, f, INVOKE, value, endpoint=endpoint, node=node, **extra)
        return OpHandle(self, ev, fail_on=None if fail_on is None else tuple(fail_on),
                        info_on=None if info_on is None else tuple(info_on), reraise=reraise)

    def op(self, process: int | str, f: str, value: Any = None, *, endpoint: str | None = None,
           node: str | None = None, fail_on: Iterable[type[BaseException]] | None = None,
           info_on: Iterable[type[BaseException]] | None = None, reraise: bool | None = None,
           **extra: Any) -> OpHandle:
        """``with history.op(p, "write", value=i, endpoint=host) as op: ...; op.ok()`` -- see OpHandle."""
        return self.invoke(process, f, value, endpoint=endpoint, node=node, fail_on=fail_on, info_on=info_on,
                           reraise=reraise, **extra)

    def event(self, f: str, value: Any = None, *, node: str | None = None, process: int | str = NEMESIS,
              **extra: Any) -> Event:
        """A nemesis / harness marker (e.g. ``history.event("fence", node="10.0.0.1")``): one ``info`` line
        that client-op views ignore."""
        ev = self.record(process, f, INVOKE, value, node=node, **extra)
        return self.record(process, f, INFO, value, id=ev.id, node=node, **extra)

    def classify(self, exc: BaseException, *, fail_on: tuple[type[BaseException], ...] | None = None,
                 info_on: tuple[type[BaseException], ...] | None = None) -> str:
        """``fail`` or ``info`` for an exception raised during an operation."""
        if self._classify is not None:
            verdict = self._classify(exc)
            if verdict is not None:
                if verdict not in (FAIL, INFO):
                    raise ValueError(f"classify() must return 'fail', 'info' or None, got {verdict!r}")
                return verdict
        fails = self.fail_on if fail_on is None else fail_on
        infos = self.info_on if info_on is None else info_on
        for cls in type(exc).__mro__:
            if cls in fails:
                return FAIL
            if cls in infos:
                return INFO
        return INFO

    # -- reading ------------------------------------------------------------------------------------
    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def operations(self, f: str | Iterable[str] | None = None, *, process: int | str | None = None,
                   include_nemesis: bool = False) -> list[Operation]:
        """Invokes paired with their completions, in invoke order; filtered by function / process."""
        fs = None if f is None else ({f} if isinstance(f, str) else set(f))
        events = self.events
        completions = {ev.id: ev for ev in events if ev.type != INVOKE}
        ops = []
        for ev in events:
            if ev.type != INVOKE:
                continue
            if (fs is not None and ev.f not in fs) or (process is not None and ev.process != process):
                continue
            if ev.process == NEMESIS and not include_nemesis:
                continue
            done = completions.get(ev.id)
            value = ev.value if done is None or done.value is None else done.value
            ops.append(Operation(
                id=ev.id, process=ev.process, f=ev.f, type=PENDING if done is None else done.type, value=value,
                invoke_value=ev.value, invoke_time=ev.time, complete_time=None if done is None else done.time,
                wall=ev.wall, endpoint=(done.endpoint if done and done.endpoint else ev.endpoint),
                node=(done.node if done and done.node else ev.node), error=None if done is None else done.error,
                extra={**ev.extra, **(done.extra if done else {})}, index=ev.index, t0=self.t0,
            ))
        return ops

    def markers(self, f: str | None = None) -> list[Operation]:
        """Nemesis / harness markers recorded with ``event()``."""
        return [op for op in self.operations(f, include_nemesis=True) if op.process == NEMESIS]

    def counts(self) -> dict[str, int]:
        """Client operations by outcome: ok, fail, info, pending, total (kept up to date as they are recorded)."""
        with self._lock:
            t = dict(self._tally)
        return {OK: t[OK], FAIL: t[FAIL], INFO: t[INFO], PENDING: t[INVOKE] - t[OK] - t[FAIL] - t[INFO],
                "total": t[INVOKE]}

    def series(self, bucket: float = 1.0, *, f: str | Iterable[str] | None = None, start: float | None = None,
               end: float | None = None) -> Series:
        """Per-bucket counts (by completion time) for plots: throughput, p50/p99 latency, fail and info.
        ``start`` / ``end`` are seconds relative to ``t0`` (``end`` exclusive)."""
        if bucket <= 0:
            raise ValueError(f"bucket must be > 0 seconds, got {bucket!r}")
        done = [op for op in self.operations(f) if op.complete_time is not None]
        rel = [(op, op.complete_time - self.t0) for op in done if op.complete_time is not None]
        lo = start if start is not None else min((r for _, r in rel), default=0.0)
        lo = math.floor(lo / bucket) * bucket
        hi = end if end is not None else max((r for _, r in rel), default=lo)
        # An explicit end is exclusive; the last completion itself must land in a bucket.
        n = max(1, math.ceil((hi - lo) / bucket - 1e-9) if end is not None else int((hi - lo) // bucket) + 1)
        ok, fail, info = [0] * n, [0] * n, [0] * n
        lat: list[list[float]] = [[] for _ in range(n)]
        for op, r in rel:
            i = int((r - lo) // bucket)
            if not 0 <= i < n:
                continue
            if op.type == OK:
                ok[i] += 1
                if op.latency is not None:
                    lat[i].append(op.latency)
            elif op.type == FAIL:
                fail[i] += 1
            else:
                info[i] += 1
        return Series(
            bucket=bucket, t=[lo + i * bucket for i in range(n)], ok=ok, fail=fail, info=info,
            throughput=[c / bucket for c in ok], p50=[percentile(v, 50) for v in lat],
            p99=[percentile(v, 99) for v in lat],
        )

    # -- serialisation ------------------------------------------------------------------------------
    def to_list(self) -> list[dict[str, Any]]:
        return [ev.to_dict() for ev in self.events]

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "t0": self.t0}

    @classmethod
    def from_list(cls, events: Iterable[dict[str, Any]], *, name: str = "", t0: float | None = None) -> History:
        evs = [Event.from_dict(d) for d in events]
        h = cls(name=name, t0=t0 if t0 is not None else min((e.time for e in evs), default=0.0))
        h._events = [replace(e, index=i) for i, e in enumerate(evs)]
        for e in h._events:
            if e.process != NEMESIS:
                h._tally[e.type] += 1
        h._ids = itertools.count(max((e.id for e in evs), default=0) + 1)
        return h

    def write_jsonl(self, out: IO[str]) -> None:
        """One JSON object per line; the first line is ``{"history": {name, t0}}``."""
        out.write(json.dumps({"history": self.meta()}) + "\n")
        for ev in self.events:
            out.write(json.dumps(ev.to_dict(), default=repr) + "\n")

    def dump(self, path: str | Path) -> Path:
        p = Path(path)
        with p.open("w", encoding="utf-8") as fh:
            self.write_jsonl(fh)
        return p

    @classmethod
    def read_jsonl(cls, lines: Iterable[str]) -> History:
        meta: dict[str, Any] = {}
        events = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"history line {n} is not JSON: {exc}") from None
            if n == 1 and "history" in obj:
                meta = obj["history"]
            else:
                events.append(obj)
        return cls.from_list(events, name=meta.get("name", ""), t0=meta.get("t0"))

    @classmethod
    def load(cls, path: str | Path) -> History:
        with Path(path).open(encoding="utf-8") as fh:
            return cls.read_jsonl(fh)


@dataclass
class Series:
    """Time-bucketed view of a history. ``t`` is each bucket's start in seconds from the history's
    t0; latencies are seconds (None for a bucket without ok ops)."""

    bucket: float
    t: list[float]
    ok: list[int]
    fail: list[int]
    info: list[int]
    throughput: list[float]
    p50: list[float | None]
    p99: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("bucket", "t", "ok", "fail", "info", "throughput", "p50", "p99")}
