"""Drill: DynamoDB throttling. A provisioned table runs out of capacity (its burst bucket is drained first)
and the API throttles on top; the app's retry policy must lose no acknowledged write and keep writes
succeeding.

Point it at your code by overriding the writer in your conftest.py::

    @pytest.fixture
    def dynamodb_drill_writer():
        from myapp.store import save        # your write path, with your retry policy
        return lambda client, table, item: save(client, table, item)

The client handed to the writer has botocore's own retries switched off, so the retry policy under test is
yours; add ``Config(retries=...)`` in your writer if boto3's retry modes are your policy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from faults.api import throttle
from faults.schedule import Nemesis, Step
from suites.results import CheckResult, Violation
from suites.thresholds import FRACTION, Thresholds, _limit, register
from suites.workload import Workload

pytestmark = pytest.mark.dbdrill_drill("dynamodb_throttling", kind="dynamodb-throttling")

TABLE = "dbdrill-throttle-orders"
WCU = 10
THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException",
                            "RequestLimitExceeded"})


@register
@dataclass(frozen=True)
class ThrottlingThresholds(Thresholds):
    """Throttling: retries keep writes succeeding; nothing acknowledged is lost."""

    drill_kind: ClassVar[str] = "dynamodb-throttling"
    min_availability: float | None = _limit(FRACTION, 0.95, "share of ok operations during each fault")


def is_throttle(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in THROTTLE_CODES


def default_writer(client: Any, table: str, item: dict[str, Any]) -> None:
    """The reference app write: put_item retried with tenacity (full-jitter exponential backoff, 5 s budget)
    on throttling errors only."""
    retrying = Retrying(retry=retry_if_exception(is_throttle), wait=wait_random_exponential(0.02, 1.0),
                        stop=stop_after_delay(5.0), reraise=True)
    retrying(client.put_item, TableName=table, Item=item)


def test_dynamodb_throttling(drill: Any, aws: Any, dynamodb_table: Any, dynamodb_drill_writer: Any) -> None:
    table = dynamodb_table(TABLE, rcu=200, wcu=WCU)
    client = aws.client("dynamodb", config=Config(retries={"total_max_attempts": 1}))
    seen: dict[str, int] = {}

    def count(parsed: dict[str, Any], **_: Any) -> None:
        code = parsed.get("Error", {}).get("Code")
        if code:
            seen[code] = seen.get(code, 0) + 1

    client.meta.events.register("after-call.dynamodb.PutItem", count)
    drained = drain(client, table.name)
    history = drill.history

    def write(process: int, i: int) -> None:
        key = f"p{process}-{i}"
        with history.op(process, "write", value=key, endpoint=table.region) as op:
            try:
                dynamodb_drill_writer(client, table.name, {"pk": {"S": key}, "body": {"S": "x" * 200}})
            except ClientError as exc:
                if is_throttle(exc) or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500) < 500:
                    op.fail(exc)  # DynamoDB refused it: the write did not happen
                    return
                raise

    fault = throttle("dynamodb", "PutItem", probability=0.5, seed=11, endpoint=aws)
    with drill.progress(), Workload(write, threads=2, interval=0.02, max_time=60):
        nemesis = Nemesis([Step(1.0, 1.5, fault, name="api-throttle")], max_time=30).start()
        assert nemesis.wait(30)
        nemesis.stop()
        nemesis.check()
        drill.schedule = nemesis.schedule()
        assert wait_more(history, 1.0)
    with history.op("final", "final-read", endpoint=table.region) as op:
        op.ok(scan_keys(client, table.name))
    drill.note(wcu=WCU, burst_drained_writes=drained, throttle_answers=seen, injected_hits=fault.hits)
    drill.finish(extra_results=[throttles_seen(seen, fault.hits)],
                 checks=["lost-writes", "availability", "recovery"])


def drain(client: Any, table: str) -> int:
    """Spend the table's burst bucket (300 s x WCU, full at creation) so the drill meets the real rate. The
    filler items stay (deleting them would cost capacity too); the final read ignores them."""
    written = 0
    for batch in range(2 * 300 * WCU // 25):
        items = [{"PutRequest": {"Item": {"pk": {"S": f"burst-{batch}-{j}"}}}} for j in range(25)]
        try:
            left = client.batch_write_item(RequestItems={table: items}).get("UnprocessedItems", {})
        except ClientError as exc:
            if is_throttle(exc):
                break
            raise
        written += 25 - len(left.get(table, []))
        if left:
            break
    return written


def wait_more(history: Any, seconds: float) -> bool:
    from harness.wait import wait_until

    start = history.operations()[-1].invoke_time if history.operations() else 0.0
    return bool(wait_until(lambda: any(o.invoke_time > start + seconds and o.ok for o in history.operations("write")),
                           30, interval=0.05, what="writes to succeed after the faults"))


def scan_keys(client: Any, table: str) -> list[str]:
    keys: list[str] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    for _ in range(1000):
        page = client.scan(**kwargs)
        keys.extend(i["pk"]["S"] for i in page.get("Items", []) if not i["pk"]["S"].startswith("burst-"))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return keys


def throttles_seen(seen: dict[str, int], injected: int) -> CheckResult:
    """Proof the drill throttled the app (capacity and injected) rather than passing vacuously."""
    total = sum(n for code, n in seen.items() if code in THROTTLE_CODES)
    violations = [] if total > 0 and injected > 0 else [
        Violation("no-throttling", f"the writer saw {total} throttles ({injected} injected): the drill did not bite")]
    return CheckResult("throttles-seen", not violations, f"{total} throttling answers seen by the app "
                       f"({injected} injected by the API fault, the rest from capacity)", violations,
                       {"answers": dict(seen), "injected": injected})
