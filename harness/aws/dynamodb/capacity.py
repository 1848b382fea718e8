"""DynamoDB capacity meters on the controllable clock: provisioned tables and GSIs as token buckets (refill at
the provisioned rate, holding up to 300 s of unused capacity, full at creation), on-demand tables as 1-second
windows allowed up to max(warm throughput, 2 x the previous peak); and, in either mode, each partition key value
capped at a partition's 3,000 read / 1,000 write units per second (a hot key throttles whatever the table has)."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from harness.clock import Clock

TABLE_MESSAGE = ("The level of configured provisioned throughput for the table was exceeded. Consider increasing "
                 "your provisioning level with the UpdateTable API.")
GSI_MESSAGE = ("The level of configured provisioned throughput for one or more global secondary indexes of the "
               "table was exceeded. Consider increasing your provisioning level for the under-provisioned global "
               "secondary indexes with the UpdateTable API")
# A partition serves at most this many units per second; one partition key value lives in one partition.
PARTITION_UNITS = {"read": 3000.0, "write": 1000.0}
ON_DEMAND_MESSAGE = ("Throughput exceeds the current capacity of your table or index. DynamoDB is automatically "
                     "scaling your table or index so please try again shortly. If exceptions persist, check if "
                     "you have a hot key: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/"
                     "bp-partition-key-design.html.")


@dataclass
class Demand:
    """Units a request needs from one meter: a table (``index`` None) or one of its GSIs; ``kind`` is "read"
    or "write". LSI writes use the table's capacity and are reported under ``lsi``."""

    table: Any
    index: str | None
    kind: str
    units: float
    lsi: str | None = None
    partition: str | None = None  # the item's partition key value (``items.partition_of``), table demands only

    def reason(self) -> dict[str, str]:
        """The ThrottlingReason AWS gives when this demand is refused: what (Table / Index, Read / Write) and why
        (over provisioned throughput; over a key range's share -- a hot partition, or on-demand scaling)."""
        what = ("Index" if self.index else "Table") + self.kind.capitalize()
        why = "KeyRangeThroughputExceeded" if self.partition is not None or is_on_demand(self.table) else \
            "ProvisionedThroughputExceeded"
        arn = str(self.table.table_arn) + (f"/index/{self.index}" if self.index else "")
        return {"reason": what + why, "resource": arn}


@dataclass
class _Bucket:
    level: float
    stamp: float


@dataclass
class _Window:
    start: float
    used: float = 0.0
    peak: float = 0.0


def _index(table: Any, name: str | None) -> Any:
    if name is None:
        return None
    return next((g for g in table.global_indexes if g.name == name), None)


def _totals(demands: list[Demand]) -> list[Demand]:
    """One demand per meter (table or GSI, kind) with the units summed."""
    totals: dict[tuple[int, str | None, str], Demand] = {}
    for d in demands:
        key = (id(d.table), d.index, d.kind)
        prev = totals.get(key)
        totals[key] = Demand(d.table, d.index, d.kind, (prev.units if prev else 0.0) + d.units)
    return list(totals.values())


def _partition_totals(demands: list[Demand]) -> list[Demand]:
    """One demand per (table, kind, partition key value) with the units summed (table and LSI demands)."""
    totals: dict[tuple[int, str, str], Demand] = {}
    for d in demands:
        if d.partition is None or d.index is not None:
            continue
        key = (id(d.table), d.kind, d.partition)
        prev = totals.get(key)
        totals[key] = Demand(d.table, None, d.kind, (prev.units if prev else 0.0) + d.units, partition=d.partition)
    return list(totals.values())


def is_on_demand(table: Any) -> bool:
    return (table.billing_mode or "PROVISIONED") == "PAY_PER_REQUEST"


class CapacityModel:
    """Meters per table / GSI and kind. ``enabled`` False keeps the accounting (ConsumedCapacity answers)
    but never throttles."""

    def __init__(self, clock: Clock, *, enabled: bool = True, burst_seconds: float = 300.0) -> None:
        self.clock = clock
        self.enabled = enabled
        self.burst_seconds = burst_seconds
        self._buckets: dict[tuple[Any, ...], _Bucket] = {}
        self._windows: dict[tuple[Any, ...], _Window] = {}
        # (table, kind) -> (the second, units used per partition key value in it): only the current second kept.
        self._partitions: dict[tuple[Any, ...], tuple[int, dict[str, float]]] = {}
        self._lock = threading.Lock()
        self.throttled = 0

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._windows.clear()
            self._partitions.clear()
            self.throttled = 0

    def forget(self, table: Any) -> None:
        ident = self._table_id(table)
        with self._lock:
            for d in (self._buckets, self._windows, self._partitions):
                for key in [k for k in d if k[0] == ident]:
                    del d[key]

    @staticmethod
    def _table_id(table: Any) -> tuple[str, Any]:
        return (table.table_arn, table.created_at)

    def rate(self, table: Any, index: str | None, kind: str) -> float | None:
        """Provisioned units per second of the table / GSI, None when metered as on demand."""
        if is_on_demand(table):
            return None
        owner = _index(table, index) if index else table
        throughput = getattr(owner, "throughput", None) or table.throughput
        rate = float(throughput.get("ReadCapacityUnits" if kind == "read" else "WriteCapacityUnits", 0) or 0)
        # AWS refuses 0 units; moto leaves a GSI without ProvisionedThroughput at 0: meter it as on demand.
        return rate if rate > 0 else None

    def _bucket(self, table: Any, index: str | None, kind: str, rate: float) -> _Bucket:
        key = (self._table_id(table), index, kind)
        now = self.clock.monotonic()
        cap = rate * self.burst_seconds
        bucket = self._buckets.get(key)
        if bucket is None:
            # Full at creation: the burst allowance of a table that has not been used yet.
            bucket = self._buckets[key] = _Bucket(cap, now)
        elif now > bucket.stamp:
            bucket.level = min(cap, bucket.level + rate * (now - bucket.stamp))
            bucket.stamp = now
        bucket.level = min(bucket.level, cap)
        return bucket

    def _window(self, table: Any, index: str | None, kind: str) -> tuple[_Window, float]:
        key = (self._table_id(table), index, kind)
        now = self.clock.monotonic()
        start = math.floor(now)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(start)
        elif start > window.start:
            window.peak = max(window.peak, window.used)
            window.start, window.used = start, 0.0
        owner = _index(table, index) if index else table
        warm = getattr(owner, "warm_throughput", None) or {}
        floor = float(warm.get("ReadUnitsPerSecond" if kind == "read" else "WriteUnitsPerSecond", 0) or 0)
        return window, max(floor, 2 * window.peak)

    def _partition_used(self, table: Any, kind: str) -> dict[str, float]:
        """Units used this second per partition key value of the table."""
        key = (self._table_id(table), kind)
        second = math.floor(self.clock.monotonic())
        entry = self._partitions.get(key)
        if entry is None or entry[0] != second:
            entry = self._partitions[key] = (second, {})
        return entry[1]

    def _partition_fits(self, d: Demand) -> bool:
        assert d.partition is not None
        used = self._partition_used(d.table, d.kind).get(d.partition, 0.0)
        return used + d.units <= PARTITION_UNITS[d.kind] + 1e-9

    def _refused(self, demands: list[Demand]) -> list[Demand]:
        out = [d for d in _totals(demands) if d.units > 0 and not self._fits(d.table, d.index, d.kind, d.units)]
        return out + [d for d in _partition_totals(demands) if d.units > 0 and not self._partition_fits(d)]

    def _fits(self, table: Any, index: str | None, kind: str, units: float) -> bool:
        rate = self.rate(table, index, kind)
        if rate is None:
            window, limit = self._window(table, index, kind)
            return window.used == 0 or window.used + units <= limit + 1e-9
        bucket = self._bucket(table, index, kind, rate)
        cap = rate * self.burst_seconds
        # A request bigger than the whole bucket goes through once the bucket is full (and leaves a debt).
        return bucket.level + 1e-9 >= units or (units > cap > 0 and bucket.level + 1e-9 >= cap)

    def refused(self, demands: list[Demand]) -> list[Demand]:
        """The demands (one per meter, units summed) that do not fit now; empty if all fit or throttling is
        off. Changes nothing."""
        if not self.enabled:
            return []
        with self._lock:
            out = self._refused(demands)
        self.throttled += bool(out)
        return out

    def refusal(self, demands: list[Demand]) -> tuple[str, list[dict[str, str]]] | None:
        """None if the demands fit, else the ProvisionedThroughputExceededException message and its
        ThrottlingReasons."""
        refused = self.refused(demands)
        if not refused:
            return None
        reasons = list({(r := d.reason())["reason"] + r["resource"]: r for d in refused}.values())
        if is_on_demand(refused[0].table) or any(d.partition is not None for d in refused):
            return ON_DEMAND_MESSAGE, reasons
        return (TABLE_MESSAGE if any(d.index is None for d in refused) else GSI_MESSAGE), reasons

    def fits(self, demands: list[Demand]) -> bool:
        if not self.enabled:
            return True
        with self._lock:
            return not self._refused(demands)

    def charge(self, demands: list[Demand]) -> None:
        with self._lock:
            for d in demands:
                if d.units <= 0:
                    continue
                rate = self.rate(d.table, d.index, d.kind)
                if rate is None:
                    window, _ = self._window(d.table, d.index, d.kind)
                    window.used += d.units
                else:
                    self._bucket(d.table, d.index, d.kind, rate).level -= d.units
                if d.partition is not None and d.index is None:
                    used = self._partition_used(d.table, d.kind)
                    used[d.partition] = used.get(d.partition, 0.0) + d.units

    def available(self, table: Any, index: str | None = None, kind: str = "write") -> float:
        """Units the table / GSI could take now (bucket level, or what the on-demand window has left)."""
        with self._lock:
            rate = self.rate(table, index, kind)
            if rate is None:
                window, limit = self._window(table, index, kind)
                return limit - window.used
            return self._bucket(table, index, kind, rate).level
