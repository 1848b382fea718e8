"""DynamoDB Time to Live on the controllable clock: a sweeper deletes items whose TTL attribute (epoch
seconds, a Number) lies ``delay`` seconds in the past, as the DynamoDB service (its stream record carries the
service userIdentity); expired items stay readable until swept. Also AWS's UpdateTimeToLive rules."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from harness.aws.dynamodb.patches import ttl_deleting
from harness.clock import Clock

logger = logging.getLogger(__name__)

FIVE_YEARS = 5 * 365 * 24 * 3600
# Defaults per time profile: "fast" deletes at once (swept every ~100 ms and on every clock advance);
# "aws" waits an hour, a realistic middle of AWS's "typically within a few days".
DEFAULT_DELAY = {"fast": 0.0, "aws": 3600.0}
UPDATE_INTERVAL = 3600.0
MODIFIED_TOO_OFTEN = "Time to live has been modified multiple times within a fixed interval"


def default_ttl_delay(profile: str) -> float:
    return DEFAULT_DELAY.get(profile, 0.0)


class TtlSweeper:
    """Sweeps every TTL-enabled table of every loaded moto DynamoDB backend. ``owner(table)`` may veto a
    table (a global table is swept in one region only; replication carries the delete elsewhere)."""

    def __init__(self, clock: Clock, lock: threading.RLock, *, delay: float = 0.0, interval: float = 0.1,
                 owner: Callable[[Any], bool] | None = None) -> None:
        self.clock = clock
        self.lock = lock
        self.delay = self.default_delay = delay
        self.interval = interval
        self.owner = owner
        self.deleted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._updates: dict[tuple[str, Any], float] = {}

    def start(self) -> TtlSweeper:
        self._stop.clear()
        self._unsubscribe = self.clock.subscribe(self._on_advance)
        self._thread = threading.Thread(target=self._run, name="dbdrill-ttl", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def reset(self) -> None:
        self._updates.clear()
        self.deleted = 0
        self.delay = self.default_delay

    def _on_advance(self, now: float) -> None:
        self.sweep()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:
                logger.exception("TTL sweep failed")

    @staticmethod
    def _tables() -> Iterator[Any]:
        from moto.dynamodb.models import dynamodb_backends

        for account in list(dynamodb_backends.values()):
            for backend in list(account.values()):
                yield from list(backend.tables.values())

    def expired(self, table: Any, now: float | None = None) -> list[Any]:
        """Items of ``table`` the sweeper would delete at ``now`` (clock time by default)."""
        ttl = table.ttl
        attr = ttl.get("AttributeName")
        if ttl.get("TimeToLiveStatus") != "ENABLED" or not attr:
            return []
        now = self.clock.time() if now is None else now
        out = []
        for item in table.all_items():
            value = item.attrs.get(attr)
            if value is None or value.type != "N":
                continue  # TTL ignores anything but a Number
            try:
                expires = float(value.value)
            except (TypeError, ValueError):
                continue
            # AWS ignores expiry times more than five years in the past (likely milliseconds or garbage).
            if expires + self.delay <= now and expires >= now - FIVE_YEARS:
                out.append(item)
        return out

    def sweep(self) -> int:
        """Delete what has expired now; returns how many items went."""
        count = 0
        with self.lock:
            for table in self._tables():
                if self.owner is not None and not self.owner(table):
                    continue
                for item in self.expired(table):
                    with ttl_deleting():
                        table.delete_item(item.hash_key, item.range_key)
                    count += 1
        if count:
            self.deleted += count
            logger.debug("TTL sweeper deleted %d item(s)", count)
        return count

    # -- UpdateTimeToLive rules -------------------------------------------------------------------------
    def check_update(self, table: Any, spec: dict[str, Any]) -> str | None:
        """The ValidationException message AWS gives for this UpdateTimeToLive, or None."""
        enabled = spec.get("Enabled")
        status = table.ttl.get("TimeToLiveStatus")
        if enabled is True and status == "ENABLED":
            return "TimeToLive is already enabled"
        if enabled is False and status in ("DISABLED", None):
            return "TimeToLive is already disabled"
        last = self._updates.get(self._key(table))
        if last is not None and self.clock.time() - last < UPDATE_INTERVAL:
            return MODIFIED_TOO_OFTEN
        return None

    def record_update(self, table: Any) -> None:
        self._updates[self._key(table)] = self.clock.time()

    @staticmethod
    def _key(table: Any) -> tuple[str, Any]:
        return (table.table_arn, table.created_at)
