"""Drill: DynamoDB global table with one region down. The app writes to its home region and fails over to
another region when the home region is unreachable; after the heal, replication catches up and every
region holds every acknowledged write.

Point it at your code by overriding the app fixture in your conftest.py::

    @pytest.fixture
    def region_drill_app():
        from myapp.orders import OrdersRepo    # builds its own boto3 clients from the environment
        return lambda regions: OrdersRepo(regions)   # needs .put(key) and .region (where the last put went)

The drill runs with the emulator's environment applied (AWS_ENDPOINT_URL, dummy credentials), so plain
``boto3.client("dynamodb", region_name=...)`` in your code reaches the emulator.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from faults.outage import region_outage
from faults.schedule import Nemesis, Step
from harness.wait import wait_until
from suites.results import CheckResult, Violation
from suites.thresholds import SECONDS, Thresholds, _limit, register
from suites.workload import Workload

pytestmark = pytest.mark.dbdrill_drill("region_outage", kind="dynamodb-region-outage")

TABLE = "dbdrill-global-orders"
HOME, OTHER = "us-east-1", "eu-west-1"
OUTAGE_S = 2.0
UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectionError)


@register
@dataclass(frozen=True)
class RegionOutageDynamoThresholds(Thresholds):
    """Global-table region outage: client-side failover within seconds, replicas converge after the heal."""

    drill_kind: ClassVar[str] = "dynamodb-region-outage"
    max_rto: float | None = _limit(SECONDS, 3.0, "fault start -> first successful write, per fault")
    max_convergence: float | None = _limit(SECONDS, 10.0, "heal -> every region holds every acknowledged write")


class FailoverApp:
    """A reference app: writes to the first region, moves to the next one when a region is unreachable."""

    def __init__(self, regions: Sequence[str]) -> None:
        config = Config(retries={"total_max_attempts": 1}, connect_timeout=0.5, read_timeout=1.0)
        self.clients = [boto3.client("dynamodb", region_name=r, config=config) for r in regions]
        self.regions = list(regions)
        self.current = 0

    @property
    def region(self) -> str:
        return self.regions[self.current]

    def put(self, key: str) -> None:
        try:
            self.clients[self.current].put_item(TableName=TABLE, Item={"pk": {"S": key}})
        except UNREACHABLE:
            # This write failed; the next one goes to the next region.
            self.current = (self.current + 1) % len(self.clients)
            raise


def test_region_outage(drill: Any, aws: Any, aws_env: Any, dynamodb_table: Any, region_drill_app: Any) -> None:
    for region in (HOME, OTHER):
        if region not in aws.regions:
            pytest.skip(f"the region_outage drill needs regions {HOME} and {OTHER} (--dbdrill-regions)")
    dynamodb_table(TABLE, region=HOME)
    home = aws.client("dynamodb", region=HOME)
    home.update_table(TableName=TABLE, ReplicaUpdates=[{"Create": {"RegionName": OTHER}}])
    app = region_drill_app([HOME, OTHER])
    history = drill.history
    history.fail_on = (EndpointConnectionError, ConnectionRefusedError)
    history.info_on = (ConnectionClosedError, ReadTimeoutError)

    def write(process: int, i: int) -> None:
        with history.op(process, "write", value=f"k{i}") as op:
            try:
                app.put(f"k{i}")
            finally:
                op.set_node(app.region)

    with drill.progress(), Workload(write, threads=1, interval=0.02, max_time=60):
        nemesis = Nemesis([Step(1.0, OUTAGE_S, region_outage(HOME, "refuse", endpoint=aws), name="outage")],
                          max_time=30).start()
        assert nemesis.wait(30)
        nemesis.stop()
        nemesis.check()
        drill.schedule = nemesis.schedule()
        healed = history.operations()[-1].invoke_time
        wait_until(lambda: sum(o.ok for o in history.operations("write") if o.invoke_time > healed) >= 20, 30,
                   interval=0.05, what="writes after the heal")
    acked = {o.value for o in history.operations("write") if o.ok}
    convergence = converge(aws, acked)
    for region in (HOME, OTHER):
        with history.op("final", "final-read", endpoint=region) as op:
            op.ok(keys(aws.client("dynamodb", region=region)))
    regions_used = sorted({o.node for o in history.operations("write") if o.ok and o.node})
    drill.note(regions_used=regions_used, convergence_s=convergence)
    drill.finish(extra_results=[converged(drill, convergence, regions_used)],
                 checks=["lost-writes", "recovery", "availability"])


def keys(client: Any) -> list[str]:
    out: list[str] = []
    kwargs: dict[str, Any] = {"TableName": TABLE, "ConsistentRead": True}
    for _ in range(1000):
        page = client.scan(**kwargs)
        out.extend(i["pk"]["S"] for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return out


def converge(aws: Any, acked: set[str], timeout: float = 30.0) -> float | None:
    """Seconds until every region holds every acknowledged write (None: not within ``timeout``)."""
    import time

    start = time.monotonic()
    clients = [aws.client("dynamodb", region=r) for r in (HOME, OTHER)]
    try:
        wait_until(lambda: all(acked <= set(keys(c)) for c in clients), timeout, interval=0.1,
                   what="replicas to converge")
    except Exception:
        return None
    return time.monotonic() - start


def converged(drill: Any, seconds: float | None, regions_used: list[str]) -> CheckResult:
    limit = drill.thresholds.max_convergence
    violations = []
    if seconds is None or (limit is not None and seconds > limit):
        violations.append(Violation("not-converged", f"replicas did not hold every acknowledged write within "
                                    f"{limit} s of the end of the drill"))
    if OTHER not in regions_used:
        violations.append(Violation("no-failover", f"no write succeeded in {OTHER}: the app never failed over"))
    return CheckResult("replicas-converged", not violations,
                       f"replicas converged {seconds if seconds is None else round(seconds, 3)} s after the drill; "
                       f"writes landed in {', '.join(regions_used)}", violations,
                       {"convergence_s": seconds, "regions_used": regions_used})
