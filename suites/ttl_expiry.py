"""Drill: DynamoDB TTL. Items expire while the app reads them; until the sweeper deletes them they are
still returned by GetItem (as in AWS), so the app must filter them. The TTL deletions reach the app's
stream handler with the Service identity, user deletes do not.

Point it at your code by overriding fixtures in your conftest.py::

    @pytest.fixture
    def ttl_drill_reader():
        from myapp.sessions import load_session       # must hide expired-but-unswept items
        return lambda client, table, key: load_session(client, table, key)

    @pytest.fixture
    def ttl_drill_stream_handler():
        from myapp.archive import handler, archived   # your Lambda handler, and how to see what it did
        return handler, archived
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from harness.wait import wait_until
from suites.results import CheckResult, Violation
from suites.thresholds import COUNT, SECONDS, Thresholds, _limit, register
from suites.workload import Workload

pytestmark = pytest.mark.dbdrill_drill("ttl_expiry", kind="dynamodb-ttl")

TABLE = "dbdrill-ttl-sessions"
TTL_ATTR = "expires"
ITEMS = 40
USER_DELETES = 8
SWEEP_DELAY = 1.0  # seconds after expiry before the sweeper deletes: the "expired but still there" window


@register
@dataclass(frozen=True)
class TtlThresholds(Thresholds):
    """TTL: the app never serves an expired item; every expiry is handled once; sweeps happen."""

    drill_kind: ClassVar[str] = "dynamodb-ttl"
    max_expired_reads: int = _limit(COUNT, 0, "reads where the app returned an item past its TTL")
    max_sweep_lag: float | None = _limit(SECONDS, SWEEP_DELAY + 3.0, "expiry -> the item's TTL deletion")


def _expires(item: dict[str, Any] | None) -> float | None:
    if not item or TTL_ATTR not in item:
        return None
    value = item[TTL_ATTR]
    return float(value["N"] if isinstance(value, dict) else value)


def default_reader(client: Any, table: str, key: str) -> dict[str, Any] | None:
    """The reference app read: filters items past their TTL, as AWS tells apps to."""
    item = client.get_item(TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
    exp = _expires(item)
    if exp is not None and exp <= time.time():
        return None
    return item


def default_stream_handler() -> tuple[Callable[[dict[str, Any]], None], Callable[[], list[str]]]:
    """The reference archiver: archives items deleted by TTL (Service identity), ignores user deletes."""
    archived: list[str] = []

    def handler(event: dict[str, Any]) -> None:
        for record in event["Records"]:
            identity = record.get("userIdentity") or {}
            if record["eventName"] == "REMOVE" and identity.get("principalId") == "dynamodb.amazonaws.com":
                archived.append(record["dynamodb"]["Keys"]["pk"]["S"])

    return handler, lambda: list(archived)


def test_ttl_expiry(drill: Any, aws: Any, dynamodb_table: Any, ttl_drill_reader: Any,
                    ttl_drill_stream_handler: Any) -> None:
    ttl = aws.dynamodb.ttl
    saved_delay = ttl.delay
    ttl.delay = SWEEP_DELAY
    try:
        run(drill, aws, dynamodb_table, ttl_drill_reader, ttl_drill_stream_handler)
    finally:
        ttl.delay = saved_delay


def run(drill: Any, aws: Any, dynamodb_table: Any, reader: Any, stream_handler: Any) -> None:
    table = dynamodb_table(TABLE, ttl_attribute=TTL_ATTR, stream=True)
    client = aws.client("dynamodb")
    handler, archived = stream_handler
    removes: list[dict[str, Any]] = []

    def tap(event: dict[str, Any]) -> None:
        removes.extend(r for r in event["Records"] if r["eventName"] == "REMOVE")
        handler(event)

    mapping = aws.dynamodb_stream_handler(table.name, tap, batch_size=10)
    rng = random.Random(7)
    now = time.time()
    expiry = {f"s{i}": now + rng.uniform(0.8, 2.5) for i in range(ITEMS)}
    history = drill.history
    for key, exp in expiry.items():
        with history.op("loader", "write", value=key, endpoint=table.region):
            client.put_item(TableName=table.name, Item={"pk": {"S": key}, TTL_ATTR: {"N": f"{exp:.3f}"}})
    user_deleted = set(rng.sample(sorted(expiry), USER_DELETES))
    for key in sorted(user_deleted):
        with history.op("loader", "delete", value=key, endpoint=table.region):
            client.delete_item(TableName=table.name, Key={"pk": {"S": key}})

    def read(process: int, i: int) -> None:
        key = rng.choice(sorted(expiry))
        with history.op(process, "read", value=key, endpoint=table.region) as op:
            item = reader(client, table.name, key)
            op.ok({"key": key, "item_expires": _expires(item), "at": time.time()})

    horizon = max(expiry.values()) + SWEEP_DELAY + 0.5
    with drill.progress(), Workload(read, threads=2, interval=0.01, max_time=30):
        wait_until(lambda: time.time() > horizon, 30, interval=0.05, what="every item past its TTL and delay")
    expired = set(expiry) - user_deleted
    wait_until(lambda: len({r["dynamodb"]["Keys"]["pk"]["S"] for r in removes}) >= ITEMS, 15, interval=0.05,
               what="every item's REMOVE record")
    mapping.wait_caught_up(15)
    with history.op("final", "final-read", endpoint=table.region) as op:
        left = client.scan(TableName=table.name, ConsistentRead=True).get("Items", [])
        op.ok([i["pk"]["S"] for i in left])
    drill.note(items=ITEMS, user_deletes=USER_DELETES, sweep_delay_s=SWEEP_DELAY)
    drill.finish(extra_results=[expired_reads(drill), ttl_stream(drill, expired, user_deleted, removes, expiry,
                                                                 archived(), left)],
                 checks=["availability"])


def expired_reads(drill: Any) -> CheckResult:
    bad = []
    reads = [o for o in drill.history.operations("read") if o.ok]
    for op in reads:
        exp = op.value.get("item_expires")
        if exp is not None and exp <= op.value["at"]:
            bad.append(Violation("expired-served", f"item {op.value['key']} expired at {exp:.3f}, returned at "
                                 f"{op.value['at']:.3f}", op))
    limit = drill.thresholds.max_expired_reads
    return CheckResult("expired-reads", len(bad) <= limit,
                       f"{len(bad)} of {len(reads)} reads returned an expired item (allowed {limit})", bad,
                       {"reads": len(reads), "expired_served": len(bad)})


def ttl_stream(drill: Any, expired: set[str], user_deleted: set[str], removes: list[dict[str, Any]],
               expiry: dict[str, float], archived: list[str], left: list[Any]) -> CheckResult:
    violations = []
    service = {r["dynamodb"]["Keys"]["pk"]["S"]: r for r in removes
               if (r.get("userIdentity") or {}).get("principalId") == "dynamodb.amazonaws.com"}
    plain = {r["dynamodb"]["Keys"]["pk"]["S"] for r in removes if not r.get("userIdentity")}
    for key in sorted(expired - set(service)):
        violations.append(Violation("no-service-remove", f"{key} expired but no REMOVE with the Service identity"))
    for key in sorted(user_deleted - plain):
        violations.append(Violation("user-delete-identity", f"user delete of {key} missing or carries an identity"))
    for key in sorted(set(archived) - expired):
        violations.append(Violation("archived-wrongly", f"{key} was archived but was not deleted by TTL"))
    counts = {k: archived.count(k) for k in expired}
    for key, n in sorted(counts.items()):
        if n != 1:
            violations.append(Violation("archive-count", f"{key} archived {n} times (expected once)"))
    if left:
        violations.append(Violation("not-swept", f"{len(left)} items still in the table after the sweep"))
    lags = [r["dynamodb"]["ApproximateCreationDateTime"] - expiry[k] for k, r in service.items()]
    max_lag = max(lags, default=None)
    limit = drill.thresholds.max_sweep_lag
    if limit is not None and max_lag is not None and max_lag > limit:
        violations.append(Violation("sweep-lag", f"an item was swept {max_lag:.2f} s after expiry (limit {limit})"))
    return CheckResult("ttl-stream", not violations,
                       f"{len(service)} TTL deletions with the Service identity, {len(plain)} user deletes without; "
                       f"{len(archived)} archived; max sweep lag {max_lag if max_lag is None else round(max_lag, 2)} s",
                       violations, {"service_removes": len(service), "user_removes": len(plain),
                                    "archived": len(archived), "max_sweep_lag_s": max_lag})
