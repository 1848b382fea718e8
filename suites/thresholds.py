"""Pass/fail limits of a drill, one dataclass per drill kind, parsed strictly from ini / CLI / env / dicts."""
from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from faults.iso8601 import DurationError, parse_duration
from harness.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T", bound="Thresholds")

SECONDS, COUNT, FRACTION = "seconds", "count", "fraction"
_EXPECT = {
    SECONDS: "seconds (a number, or 30s / 500ms / 2m / PT1M30S; none to switch the check off)",
    COUNT: "a whole number >= 0",
    FRACTION: "a fraction 0..1 or a percentage (0.999 or 99.9%; none to switch the check off)",
}
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class ThresholdError(ConfigError):
    """A threshold was given a name or value dbdrill cannot use."""


def _limit(kind: str, default: Any, help: str) -> Any:
    return field(default=default, metadata={"kind": kind, "help": help})


@dataclass(frozen=True)
class Thresholds:
    """Limits every drill understands. ``None`` switches a time/fraction check off; counts are hard
    limits (0 = none allowed)."""

    drill_kind: ClassVar[str] = "generic"

    max_rto: float | None = _limit(SECONDS, None, "fault start -> first successful write, per fault")
    max_rpo: float | None = _limit(SECONDS, None, "span of acknowledged writes lost before a fault")
    max_lost_writes: int = _limit(COUNT, 0, "acknowledged writes missing from the final read")
    max_stale_writer_reads: int = _limit(COUNT, 0, "reads from the writer that missed an acknowledged write")
    max_reader_lag: float | None = _limit(SECONDS, None, "how far replica reads may trail acknowledged writes")
    max_reader_lag_ops: int | None = _limit(COUNT, None, "how many acknowledged writes a replica read may miss")
    min_availability: float | None = _limit(FRACTION, None, "share of ok operations during each fault")
    max_split_brain_writes: int = _limit(COUNT, 0, "writes acknowledged by a fenced node after its fence")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(type(self), f.name, getattr(self, f.name), f.metadata["kind"])

    # -- parsing ------------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def parse(cls: type[T], *sources: str | Mapping[str, Any] | None) -> T:
        """Defaults of this drill kind, overridden by each source in turn (e.g. ini, then env, then CLI).
        A string source is ``name=value`` items separated by commas, semicolons or new lines."""
        return cls().override(*sources)

    def override(self: T, *sources: str | Mapping[str, Any] | None) -> T:
        changes: dict[str, Any] = {}
        for source in sources:
            if source is None:
                continue
            if not isinstance(source, str | Mapping):
                raise ThresholdError(f"thresholds must be a 'name=value,...' string or a mapping, got {source!r}")
            items = _split(source) if isinstance(source, str) else dict(source)
            for raw_name, value in items.items():
                name = _field_name(type(self), raw_name)
                changes[name] = _convert(type(self), name, value)
        return dataclasses.replace(self, **changes)

    # -- reporting ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"drill_kind": self.drill_kind, **{n: getattr(self, n) for n in self.names()}}

    def rows(self) -> list[dict[str, Any]]:
        """One row per threshold for reports: name, value, unit, meaning."""
        return [{"name": f.name, "value": getattr(self, f.name), "unit": f.metadata["kind"],
                 "help": f.metadata["help"]} for f in dataclasses.fields(self)]


def _split(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in re.split(r"[,;\n]", text):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ThresholdError(f"threshold item {item!r} must look like name=value (e.g. max_rto=30s)")
        out[name.strip()] = value.strip()
    return out


def _field_name(cls: type[Thresholds], raw: str) -> str:
    name = raw.strip().lower().replace("-", "_")
    name = name.removeprefix("dbdrill_threshold_").removeprefix("threshold_")
    known = cls.names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ThresholdError(f"unknown threshold {raw!r} for drill kind {cls.drill_kind}{hint} "
                             f"Known thresholds: {', '.join(known)}", obj=raw)
    return name


def _refuse(cls: type[Thresholds], name: str, kind: str, value: Any, why: str = "") -> ThresholdError:
    return ThresholdError(f"threshold {name} ({cls.drill_kind}) expects {_EXPECT[kind]}, got {value!r} "
                          f"({type(value).__name__}){why}", obj=name)


def _kind(cls: type[Thresholds], name: str) -> str:
    return next(f.metadata["kind"] for f in dataclasses.fields(cls) if f.name == name)


def _convert(cls: type[Thresholds], name: str, value: Any) -> Any:
    kind = _kind(cls, name)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "off", "") and (kind != COUNT or _optional(cls, name)):
            return None
        try:
            return _PARSERS[kind](text)
        except (ValueError, DurationError) as exc:
            raise _refuse(cls, name, kind, value, f": {exc}") from None
    _check(cls, name, value, kind)
    return float(value) if kind in (SECONDS, FRACTION) and value is not None else value


def _optional(cls: type[Thresholds], name: str) -> bool:
    return next(f for f in dataclasses.fields(cls) if f.name == name).default is None


def _check(cls: type[Thresholds], name: str, value: Any, kind: str) -> None:
    if value is None:
        if kind == COUNT and not _optional(cls, name):
            raise _refuse(cls, name, kind, value)
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(cls, name, kind, value)
    if kind == COUNT and not isinstance(value, int):
        raise _refuse(cls, name, kind, value)
    if value < 0:
        raise _refuse(cls, name, kind, value, ": it cannot be negative")
    if kind == FRACTION and value > 1:
        raise _refuse(cls, name, kind, value, f": above 1 (did you mean {value}%?)")


def _seconds(text: str) -> float:
    if text.startswith("P"):
        return parse_duration(text)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?", text)
    if not m:
        raise ValueError("not a duration")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]


def _count(text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise ValueError("not a whole number")
    return int(text)


def _fraction(text: str) -> float:
    if text.endswith("%"):
        pct = float(text[:-1])
        if not 0 <= pct <= 100:
            raise ValueError("a percentage is 0..100")
        return pct / 100.0
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"above 1 (did you mean {text}%?)" if value > 1 else "negative")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {SECONDS: _seconds, COUNT: _count, FRACTION: _fraction}

# -- drill kinds ------------------------------------------------------------------------------------
KINDS: dict[str, type[Thresholds]] = {"generic": Thresholds}


def register(cls: type[T]) -> type[T]:
    """Class decorator: make ``cls`` the thresholds of drill kind ``cls.drill_kind``."""
    KINDS[cls.drill_kind] = cls
    return cls


@register
@dataclass(frozen=True)
class MultiAzFailoverThresholds(Thresholds):
    """RDS Multi-AZ DB instance failover: AWS documents 60-120 s and no acknowledged write lost."""

    drill_kind: ClassVar[str] = "rds-multi-az-failover"
    max_rto: float | None = _limit(SECONDS, 120.0, "fault start -> first successful write, per fault")
    max_rpo: float | None = _limit(SECONDS, 0.0, "span of acknowledged writes lost before a fault")


@register
@dataclass(frozen=True)
class ClusterFailoverThresholds(Thresholds):
    """RDS Multi-AZ DB cluster failover: typically under 35 s."""

    drill_kind: ClassVar[str] = "rds-cluster-failover"
    max_rto: float | None = _limit(SECONDS, 35.0, "fault start -> first successful write, per fault")
    max_rpo: float | None = _limit(SECONDS, 0.0, "span of acknowledged writes lost before a fault")


@register
@dataclass(frozen=True)
class AuroraFailoverThresholds(Thresholds):
    """Aurora failover: a replica promoted, the cluster endpoint flipped, typically within 30-60 s."""

    drill_kind: ClassVar[str] = "aurora-failover"
    max_rto: float | None = _limit(SECONDS, 60.0, "fault start -> first successful write, per fault")
    max_rpo: float | None = _limit(SECONDS, 0.0, "span of acknowledged writes lost before a fault")


@register
@dataclass(frozen=True)
class ReadReplicaThresholds(Thresholds):
    """Asynchronous read replicas: readers may trail the writer; the writer never may."""

    drill_kind: ClassVar[str] = "read-replica"
    max_reader_lag: float | None = _limit(SECONDS, 30.0, "how far replica reads may trail acknowledged writes")


@register
@dataclass(frozen=True)
class AuroraGlobalThresholds(Thresholds):
    """Aurora global database: secondary regions lag under 1 s (the RPO of a failover that allows data loss); a
    managed failover to a secondary region takes minutes."""

    drill_kind: ClassVar[str] = "aurora-global"
    max_reader_lag: float | None = _limit(SECONDS, 1.0, "how far replica reads may trail acknowledged writes")
    max_rto: float | None = _limit(SECONDS, 300.0, "fault start -> first successful write, per fault")
    max_rpo: float | None = _limit(SECONDS, 1.0, "span of acknowledged writes lost before a fault")
    max_lost_writes: int = _limit(COUNT, 1000, "acknowledged writes missing from the final read")


@register
@dataclass(frozen=True)
class GlobalTableThresholds(Thresholds):
    """DynamoDB global tables: replication typically within a second; paused replication may go on for
    up to 5 minutes after FIS pauses it. Last writer wins, so conflicting writes may lose."""

    drill_kind: ClassVar[str] = "dynamodb-global-table"
    max_reader_lag: float | None = _limit(SECONDS, 5.0, "how far replica reads may trail acknowledged writes")


@register
@dataclass(frozen=True)
class RegionOutageThresholds(Thresholds):
    """Cross-region failover after a region outage: an event / alarm promotes the replica and flips DNS."""

    drill_kind: ClassVar[str] = "region-outage"
    max_rto: float | None = _limit(SECONDS, 300.0, "fault start -> first successful write, per fault")


def thresholds_for(kind: str, *sources: str | Mapping[str, Any] | None) -> Thresholds:
    """The thresholds of drill kind ``kind`` with ``sources`` applied in order (later wins)."""
    if kind not in KINDS:
        raise ThresholdError(f"unknown drill kind {kind!r}; known: {', '.join(sorted(KINDS))}", obj=kind)
    return KINDS[kind].parse(*sources)
