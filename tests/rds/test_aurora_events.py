"""Aurora RDS events: DB cluster events (creation, failover started across or within an AZ, completed, failed,
deletion) and member instance events reach event subscriptions for SourceType db-cluster / db-instance in the RDS
notification shape, and DescribeEvents lists them."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.plugin.aurora import AuroraHandle
from harness.rds import replication as repl
from harness.rds.aurora import aurora
from harness.rds.reconciler import RdsReconciler
from harness.wait import wait_until
from tests.rds.test_rds_events import DOC, KEYS, Inbox

Make = Callable[..., AuroraHandle]


def test_cluster_failover_events_reach_sqs(aurora_cluster: Make, aws: Any) -> None:
    inbox = Inbox(aws, "aurora-failover")
    rds = aws.client("rds")
    rds.create_event_subscription(SubscriptionName="ledger-failover", SnsTopicArn=inbox.topic,
                                  SourceType="db-cluster", SourceIds=["ledger"], EventCategories=["failover"])
    db = aurora_cluster("ledger", readers=1)  # ledger-1 in us-east-1a, ledger-2 in us-east-1b
    rds.failover_db_cluster(DBClusterIdentifier="ledger", TargetDBInstanceIdentifier="ledger-2")
    db.wait_available()
    wait_until(lambda: len(inbox.drain()) >= 2, 10, what="the failover notifications")
    assert inbox.ids() == ["RDS-EVENT-0073", "RDS-EVENT-0071"]
    started, completed = inbox.events()
    assert set(completed) == KEYS
    assert completed["Event Source"] == "db-cluster"
    assert completed["Source ID"] == "ledger" and completed["Source ARN"] == db.arn
    assert completed["Identifier Link"] == "https://console.aws.amazon.com/rds/home?region=us-east-1#dbcluster:id=ledger"
    assert completed["Event ID"] == DOC + "RDS-EVENT-0071"
    assert started["Event Message"] == "Started cross AZ failover to DB instance: ledger-2."
    assert completed["Event Message"] == "Completed failover to DB instance: ledger-2."
    envelope = inbox.received[-1]
    assert envelope["MessageAttributes"]["EventID"]["Value"] == "RDS-EVENT-0071"
    assert envelope["MessageAttributes"]["Resource"]["Value"] == db.arn


def test_same_az_failover_and_a_failed_one(rds: RdsReconciler, aws: Any, dns_resolver: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    client = aws.client("rds")
    client.create_db_cluster(DBClusterIdentifier="twin", Engine="aurora-postgresql", MasterUsername="master",
                          MasterUserPassword="twin-password-1", DatabaseName="app")
    for name in ("twin-1", "twin-2"):
        client.create_db_instance(DBInstanceIdentifier=name, DBClusterIdentifier="twin", Engine="aurora-postgresql",
                               DBInstanceClass="db.r6g.large", AvailabilityZone="us-east-1a")
    ext = aurora(rds)
    ext.wait_available("twin", timeout=60)
    ext.failover("twin", "twin-2")
    ext.wait_available("twin", timeout=60)

    def refuse(*args: Any, **kwargs: Any) -> float:
        raise HarnessError("promotion refused (test)")

    monkeypatch.setattr(repl, "promote", refuse)
    with pytest.raises(HarnessError):
        ext.failover("twin", "twin-1")
    monkeypatch.undo()
    events = client.describe_events(SourceIdentifier="twin", SourceType="db-cluster")["Events"]
    assert [(e["EventCategories"], e["Message"]) for e in events] == [
        (["creation"], "DB cluster created."),
        (["failover"], "Started same AZ failover to DB instance: twin-2."),
        (["failover"], "Completed failover to DB instance: twin-2."),
        (["failover"], "Started same AZ failover to DB instance: twin-1."),
        (["failover"], "Promoting previous primary again: twin-2."),
        (["failover"], "Cluster failover failed, check the health of your cluster instances and try again."),
    ]
    assert all(e["SourceType"] == "db-cluster" and e["SourceArn"].endswith(":cluster:twin") for e in events)


def test_member_events_and_cluster_deletion(aurora_cluster: Make, aws: Any) -> None:
    inbox = Inbox(aws, "aurora-all")
    rds = aws.client("rds")
    rds.create_event_subscription(SubscriptionName="all", SnsTopicArn=inbox.topic)
    db = aurora_cluster("crm", readers=1)
    rds.reboot_db_instance(DBInstanceIdentifier="crm-2")
    wait_until(lambda: db.cluster.member("crm-2").status == "available" and not db.cluster.busy, 30,
               what="the reboot")
    for name in db.instances:
        rds.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True)
    wait_until(lambda: not db.cluster.members, 30, what="the members to go")
    rds.delete_db_cluster(DBClusterIdentifier="crm", SkipFinalSnapshot=True)
    wait_until(lambda: "RDS-EVENT-0171" in inbox.ids(), 30, what="the cluster deletion event")
    seen = [(json.loads(e["Message"])["Source ID"], e["MessageAttributes"]["EventID"]["Value"])
            for e in inbox.received]
    assert seen[0] == ("crm", "RDS-EVENT-0170")
    assert ("crm-1", "RDS-EVENT-0005") in seen and ("crm-2", "RDS-EVENT-0005") in seen
    assert seen.index(("crm-2", "RDS-EVENT-0004")) < seen.index(("crm-2", "RDS-EVENT-0006"))
    assert ("crm-1", "RDS-EVENT-0003") in seen and ("crm-2", "RDS-EVENT-0003") in seen
    assert seen[-1] == ("crm", "RDS-EVENT-0171")
