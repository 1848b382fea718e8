"""Drill: cross-region failover automation (the seed pattern). The primary region goes dark; a health alarm
publishes to SNS; the automation — a Lambda handler written only with boto3 calls (suites.automation) —
promotes the cross-region read replica and UPSERTs the app's Route53 record; the app follows the name.
RTO, lost acknowledged writes (an asynchronous replica may miss the tail: RPO-bounded) and split brain on
the old primary's return are checked.

Override ``rds_drill_connect`` for your client (see multi_az_failover) and ``cross_region_handler`` for your
automation (a Lambda handler taking an SQS event of SNS envelopes; configuration from DR_* variables)."""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from faults.base import Composite
from faults.database import fence, pause_replication
from faults.outage import region_outage
from faults.schedule import Nemesis, Step
from harness.wait import wait_until
from suites.drill import Fenced
from suites.pgclient import PgApp, Target, deadline
from suites.thresholds import COUNT, SECONDS, Thresholds, _limit, register
from suites.workload import Workload, settle, writes_after

pytestmark = pytest.mark.dbdrill_drill("cross_region_failover", kind="cross-region-failover")

# Not us-east-1 as home: an outage there also takes Route53's control plane (its API is signed for
# us-east-1, here as on AWS), and automation that UPSERTs records could not run; see docs/drills.md.
HOME, DR = "us-west-2", "us-east-1"
ZONE = "drill-dr.internal"
RECORD = f"db.{ZONE}"
OUTAGE_S = 8.0
ALARM_AFTER = 2  # failed canary probes in a row (each up to the 2 s connect timeout) before the alarm fires


@register
@dataclass(frozen=True)
class CrossRegionThresholds(Thresholds):
    """Cross-region failover by automation: minutes on AWS (detection + promotion + DNS); seconds here."""

    drill_kind: ClassVar[str] = "cross-region-failover"
    max_rto: float | None = _limit(SECONDS, 15.0, "fault start -> first successful write, per fault")
    max_rpo: float | None = _limit(SECONDS, 1.0, "span of acknowledged writes lost before a fault")
    max_lost_writes: int = _limit(COUNT, 1000, "acknowledged writes missing from the final read")


class CanaryAlarm:
    """Stands in for a CloudWatch alarm on a canary metric: probes ``SELECT 1`` through the app's name every
    ``period`` s and publishes an alarm state change to SNS after ``threshold`` failures in a row."""

    def __init__(self, target: Target, connect: Callable[..., Any], sns: Any, topic_arn: str, *,
                 period: float = 0.2, threshold: int = ALARM_AFTER) -> None:
        self.target, self.connect, self.sns, self.topic = target, connect, sns, topic_arn
        self.period, self.threshold = period, threshold
        self.fired_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary-alarm", daemon=True)

    def _probe(self) -> bool:
        t = self.target
        try:
            conn = self.connect(t.host, t.port, t.user, t.password, t.dbname)
        except Exception:
            return False
        try:
            with deadline(conn, 1.0):
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self) -> None:
        failures = 0
        deadline_at = time.monotonic() + 300
        while not self._stop.wait(self.period) and time.monotonic() < deadline_at:
            failures = 0 if self._probe() else failures + 1
            if failures >= self.threshold and self.fired_at is None:
                self.fired_at = time.monotonic()
                self.sns.publish(TopicArn=self.topic, Subject="ALARM: db-canary", Message=json.dumps({
                    "AlarmName": "db-canary", "NewStateValue": "ALARM", "OldStateValue": "OK",
                    "NewStateReason": f"{failures} canary probes of {self.target.host} failed",
                    "StateChangeTime": time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime()),
                    "Region": HOME}))
                return

    def __enter__(self) -> CanaryAlarm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def sqs_trigger(sqs: Any, queue_url: str, handler: Callable[..., Any], results: list[Any]) -> Iterator[None]:
    """An SQS event source mapping, in-process: polls the queue and calls ``handler({"Records": [...]})``."""
    stop = threading.Event()

    def poll() -> None:
        deadline_at = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline_at:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = got.get("Messages", [])
            if not messages:
                stop.wait(0.05)
                continue
            event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                                  "body": m["Body"], "eventSource": "aws:sqs", "awsRegion": DR} for m in messages]}
            try:
                results.append(handler(event, None))
            except Exception as exc:
                results.append(exc)
                continue  # left on the queue: retried after the visibility timeout, as Lambda would
            for m in messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])

    thread = threading.Thread(target=poll, name="sqs-trigger", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def test_cross_region_failover(drill: Any, aws: Any, aws_env: Any, postgres_instance: Any, rds_drill_connect: Any,
                               cross_region_handler: Any, dns_resolver: Any) -> None:
    for region in (HOME, DR):
        if region not in aws.regions:
            pytest.skip(f"cross_region_failover needs regions {HOME} and {DR} (--dbdrill-regions)")
    primary = postgres_instance("drill-home", region=HOME)
    replica = postgres_instance("drill-dr", source=primary, region=DR)
    route53 = aws.client("route53")
    zone_id = route53.create_hosted_zone(Name=ZONE, CallerReference=f"dr-{time.time()}", HostedZoneConfig={
        "PrivateZone": True, "Comment": "dbdrill"}, VPC={"VPCRegion": HOME, "VPCId": "vpc-drill"})["HostedZone"]["Id"]
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": RECORD, "Type": "CNAME", "TTL": 1,
                                                  "ResourceRecords": [{"Value": primary.address}]}}]})
    sns, sqs = aws.client("sns", region=DR), aws.client("sqs", region=DR)
    topic = sns.create_topic(Name="db-alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="dr-automation")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    target = Target(RECORD, primary.port, primary.user, primary.password, primary.dbname)
    app = PgApp(drill.history, target, rds_drill_connect)
    app.setup()
    history = drill.history
    old = primary.instance.primary.address
    # The database hosts first: the region's API going dark is not what stops the app's writes.
    outage = Fenced(Composite([fence(primary), pause_replication(replica), region_outage(HOME, "blackhole",
                                                                                       endpoint=aws)],
                              name=f"region-outage-{HOME}"), history, old)

    env = {"DR_REPLICA_ID": replica.identifier, "DR_REGION": DR, "DR_ZONE_ID": zone_id, "DR_RECORD_NAME": RECORD}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    results: list[Any] = []
    try:
        with drill.progress(), sqs_trigger(sqs, queue, cross_region_handler, results), \
                CanaryAlarm(target, rds_drill_connect, sns, topic) as alarm, \
                Workload(lambda p, i: app.write(p, i * 2 + p), threads=2, interval=0.01, max_time=120):
            nemesis = Nemesis([Step(1.0, OUTAGE_S, outage, name="region-outage")], max_time=120).start()
            assert nemesis.wait(120)
            nemesis.stop()
            nemesis.check()
            drill.schedule = nemesis.schedule()
            try:
                wait_until(lambda: any(isinstance(r, dict) and r.get("failovers") for r in results), 60,
                           interval=0.05, what="the automation to fail over")
            except Exception as exc:
                exc.add_note(f"alarm fired at {alarm.fired_at}; automation results: {results}")
                raise
            healed = history.operations()[-1].invoke_time
            drill.note(recovered_after_heal=settle(writes_after(history, healed, 20), drill.settle_s))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    app.final_read()
    app.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    drill.note(alarm_fired_after_s=None if alarm.fired_at is None else round(alarm.fired_at - outage_start(drill), 3),
               automation_results=[r for r in results if not isinstance(r, BaseException)],
               automation_errors=[repr(e) for e in errors], old_primary=old)
    assert "ReadReplicaSourceDBInstanceIdentifier" not in replica.describe(), "the DR replica was not promoted"
    drill.finish(checks=["lost-writes", "data-loss", "split-brain", "recovery"])


def outage_start(drill: Any) -> float:
    return float(next(e["start_mono"] for e in drill.timeline.to_list()))

