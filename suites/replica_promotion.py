"""Drill: read-replica promotion via DNS. The app reaches its database through a Route53 name
(``db.<zone>`` CNAME -> the primary's endpoint). The primary is lost (fenced: unreachable); the failover
automation promotes the asynchronous read replica and UPSERTs the CNAME; the app follows once its DNS
cache expires. Writes must resume within the RTO limit; what was lost is measured (an asynchronous replica
may miss the tail: the RPO limit bounds it), and the old primary, back on the network, must not take
writes from the app (split brain).

Point it at your client with the ``rds_drill_connect`` fixture (see multi_az_failover), and at your own
automation by overriding ``replica_drill_automation``::

    @pytest.fixture
    def replica_drill_automation():
        from myops.failover import promote_and_flip   # (replica_id, region, zone_id, record_name) -> endpoint
        return promote_and_flip
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from faults.base import Fault, Timeline, recording
from faults.database import fence
from faults.schedule import Nemesis, Step
from suites.pgclient import PgApp, Target
from suites.thresholds import COUNT, SECONDS, Thresholds, _limit, register
from suites.workload import Workload, settle, writes_after

pytestmark = pytest.mark.dbdrill_drill("replica_promotion", kind="replica-promotion")

ZONE = "drill.internal"
RECORD = f"db.{ZONE}"
DETECTION_S = 0.3  # how long the automation takes to notice (an alarm's evaluation period, compressed)


@register
@dataclass(frozen=True)
class ReplicaPromotionThresholds(Thresholds):
    """Promotion of an asynchronous replica: writes resume in seconds; only the last moment before the loss
    may be lost (the replica's lag), never older writes."""

    drill_kind: ClassVar[str] = "replica-promotion"
    max_rto: float | None = _limit(SECONDS, 10.0, "fault start -> first successful write, per fault")
    max_rpo: float | None = _limit(SECONDS, 1.0, "span of acknowledged writes lost before a fault")
    max_lost_writes: int = _limit(COUNT, 1000, "acknowledged writes missing from the final read")


class PrimaryLoss(Fault):
    """The primary becomes unreachable; after ``detection`` s the automation promotes and flips DNS (in a
    thread, as a Lambda would run). Heal brings the old primary back on the network — now a stale,
    standalone server."""

    kind = "primary-loss"

    def __init__(self, primary: Any, automation: Any, args: tuple[Any, ...], history: Any) -> None:
        super().__init__(name="primary-loss")
        self.primary = primary
        self.fence = fence(primary)
        self.automation = automation
        self.args = args
        self.history = history
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.promoted_at: float | None = None

    def _inject(self) -> None:
        with recording(Timeline()):  # the fence is part of this window, not a window of its own
            self.fence.start()
        self.history.event("fence", node=self.primary.instance.primary.address)

        def run() -> None:
            try:
                time.sleep(DETECTION_S)  # the detection delay is part of the scenario
                self.automation(*self.args)
                self.promoted_at = time.monotonic()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name="failover-automation", daemon=True)
        self.thread.start()

    def _heal(self) -> None:
        if self.thread is not None:
            self.thread.join(120)
        self.fence.heal()

    def describe(self) -> dict[str, Any]:
        return {"primary": self.primary.identifier, "detection_s": DETECTION_S}

    def target_label(self) -> str:
        return str(self.primary.identifier)


def test_replica_promotion(drill: Any, aws: Any, postgres_instance: Any, rds_drill_connect: Any,
                           replica_drill_automation: Any, dns_resolver: Any, aws_env: Any) -> None:
    primary = postgres_instance("drill-primary")
    replica = postgres_instance("drill-replica", source=primary)
    route53 = aws.client("route53")
    zone_id = route53.create_hosted_zone(Name=ZONE, CallerReference=f"drill-{time.time()}", HostedZoneConfig={
        "PrivateZone": True, "Comment": "dbdrill"}, VPC={"VPCRegion": aws.default_region, "VPCId": "vpc-drill"}
    )["HostedZone"]["Id"]
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": RECORD, "Type": "CNAME", "TTL": 1,
                                                  "ResourceRecords": [{"Value": primary.address}]}}]})
    app = PgApp(drill.history, Target(RECORD, primary.port, primary.user, primary.password, primary.dbname),
                rds_drill_connect)
    app.setup()
    history = drill.history
    loss = PrimaryLoss(primary, replica_drill_automation, (replica.identifier, replica.region, zone_id, RECORD),
                       history)

    with drill.progress(), Workload(lambda p, i: app.write(p, i * 2 + p), threads=2, interval=0.01, max_time=120):
        nemesis = Nemesis([Step(1.0, 3.0, loss, name="primary-loss")], max_time=120).start()
        assert nemesis.wait(120)
        nemesis.stop()
        nemesis.check()
        drill.schedule = nemesis.schedule()
        if loss.error is not None:
            raise loss.error
        healed = history.operations()[-1].invoke_time
        drill.note(recovered_after_heal=settle(writes_after(history, healed, 20), drill.settle_s))
    app.final_read()
    app.close()
    desc = replica.describe()
    assert "ReadReplicaSourceDBInstanceIdentifier" not in desc, "the replica was not promoted"
    acked = [o for o in history.operations("write") if o.ok]
    drill.note(primary=primary.identifier, replica=replica.identifier, record=RECORD,
               acknowledged_writes=len(acked))
    drill.finish(checks=["lost-writes", "data-loss", "split-brain", "recovery"])

