"""The drill journal: one JSON document holding everything a drill did and concluded."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import platform
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suites.checkers import Verdict
from suites.history import History, jsonable

logger = logging.getLogger(__name__)

SCHEMA = 1
PASS, FAIL, ERROR = "pass", "fail", "error"
PACKAGES = ("dbdrill", "pytest", "moto", "boto3", "botocore", "psycopg", "dnslib", "matplotlib",
            "toxiproxy-python")


def environment(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Python, platform and the versions of the packages a drill depends on (missing ones omitted)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "platform": platform.platform(), "packages": versions, **dict(extra or {})}


@dataclass
class Journal:
    """Everything about one drill run. ``faults`` is ``Timeline.to_list()``, ``history`` the history's
    events (``History.to_list()``), ``results`` each checker's ``to_dict()``. ``verdict`` is pass / fail /
    error (the drill itself broke)."""

    drill: str
    verdict: str
    message: str = ""
    target: str = "emulator"
    settings: dict[str, Any] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    history_meta: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    experiment: dict[str, Any] | None = None
    schedule: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    @classmethod
    def build(cls, drill: str, *, history: History | None = None, faults: Any = None,
              verdict: Verdict | None = None, error: BaseException | None = None, thresholds: Any = None,
              settings: Any = None, target: str | None = None, started: float | None = None,
              finished: float | None = None, experiment: Any = None,
              schedule: Iterable[Mapping[str, Any]] | None = None, extra: Mapping[str, Any] | None = None,
              env: Mapping[str, Any] | None = None) -> Journal:
        """Assemble a journal from live objects: a History, a Timeline (or its list), a Verdict, a
        Thresholds, Settings, an FIS ExperimentRecord, a Nemesis schedule. ``error`` (the drill itself
        raised) makes the verdict ``error``; otherwise pass / fail comes from ``verdict``."""
        finished = time.time() if finished is None else finished
        if error is not None:
            outcome, message = ERROR, f"the drill raised {type(error).__name__}: {error}"
        elif verdict is not None:
            outcome, message = (PASS if verdict.valid else FAIL), verdict.message()
        else:
            outcome, message = ERROR, "no checks were run"
        fault_list = faults.to_list() if hasattr(faults, "to_list") else [dict(f) for f in faults or ()]
        first = [e["wall"] for e in (history.to_list()[:1] if history is not None else [])]
        started = started if started is not None else min([*first, *[f["start"] for f in fault_list]],
                                                          default=finished)
        return cls(
            drill=drill, verdict=outcome, message=message,
            target=target or str(getattr(settings, "target", "emulator")),
            settings=_plain(settings), faults=jsonable(fault_list),
            history=history.to_list() if history is not None else [],
            history_meta=history.meta() if history is not None else {},
            results=[r.to_dict() for r in verdict.results] if verdict is not None else [],
            thresholds=_plain(thresholds), timings={"started": started, "finished": finished,
                                                   "duration_s": max(0.0, finished - started)},
            environment=environment(env),
            experiment=_plain(experiment) or None, schedule=[dict(s) for s in schedule] if schedule else None,
            extra=jsonable(dict(extra or {})),
        )

    # -- views --------------------------------------------------------------------------------------
    def history_obj(self) -> History:
        return History.from_list(self.history, name=self.history_meta.get("name", ""),
                                 t0=self.history_meta.get("t0"))

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    # -- files --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Journal:
        if not isinstance(d, Mapping) or "drill" not in d or "verdict" not in d:
            raise ValueError("not a dbdrill journal: it needs at least 'drill' and 'verdict'")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            logger.warning("journal has fields this dbdrill does not know (ignored): %s", ", ".join(unknown))
        return cls(**{k: v for k, v in d.items() if k in known})

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=repr) + "\n", encoding="utf-8")
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Journal:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read journal {p}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"journal {p} is not JSON: {exc.msg} at line {exc.lineno}") from None
        return cls.from_dict(data)


def _plain(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    return jsonable(dict(obj))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "drill"


def run_dir(report_dir: str | Path, drill: str, started: float | None = None) -> Path:
    """``report_dir/<drill>-<UTC time>``: one directory per run, never overwritten."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started if started is not None else time.time()))
    base = Path(report_dir) / f"{slug(drill)}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
