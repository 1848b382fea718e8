"""RDS events: event subscriptions deliver to SNS (and on to subscribed SQS queues) in the RDS notification
shape, honouring SourceType, SourceIds, EventCategories and Enabled; DescribeEvents lists them."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from harness.plugin.rds import PostgresInstance
from harness.wait import wait_until

Make = Callable[..., PostgresInstance]
KEYS = {"Event Source", "Event Time", "Identifier Link", "Source ID", "Source ARN", "Event ID", "Event Message"}
DOC = "http://docs.amazonwebservices.com/AmazonRDS/latest/UserGuide/USER_Events.html#"


class Inbox:
    """An SNS topic with an SQS queue subscribed to it."""

    def __init__(self, aws: Any, name: str) -> None:
        self.sns, self.sqs = aws.client("sns"), aws.client("sqs")
        self.topic = self.sns.create_topic(Name=name)["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=arn)
        self.received: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        for _ in range(100):
            batch = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                break
            for m in batch:
                self.received.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])
        return self.received

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(e["Message"]) for e in self.drain()]

    def ids(self) -> list[str]:
        return [e["Event ID"].rsplit("#", 1)[1] for e in self.events()]


def test_failover_events_reach_sqs_in_the_rds_shape(postgres_instance: Make, aws: Any) -> None:
    inbox = Inbox(aws, "rds-failover")
    rds = aws.client("rds")
    rds.create_event_subscription(SubscriptionName="ha-failover", SnsTopicArn=inbox.topic, SourceType="db-instance",
                                  SourceIds=["ha"], EventCategories=["failover"])
    db = postgres_instance("ha", multi_az=True)
    rds.reboot_db_instance(DBInstanceIdentifier="ha", ForceFailover=True)
    wait_until(lambda: len(inbox.drain()) >= 3, 10, what="the failover notifications")
    envelope = inbox.received[-1]
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == inbox.topic
    assert envelope["Subject"] == "RDS Notification Message"
    assert envelope["MessageAttributes"]["EventID"]["Value"] == "RDS-EVENT-0049"
    assert envelope["MessageAttributes"]["Resource"]["Value"] == db.arn
    message = json.loads(envelope["Message"])
    assert set(message) == KEYS
    assert message["Event Source"] == "db-instance"
    assert message["Source ID"] == "ha" and message["Source ARN"] == db.arn
    assert message["Identifier Link"] == "https://console.aws.amazon.com/rds/home?region=us-east-1#dbinstance:id=ha"
    assert message["Event ID"] == DOC + "RDS-EVENT-0049"
    assert message["Event Message"] == "Multi-AZ instance failover completed."
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", message["Event Time"])
    # Only the failover category was asked for: no creation, no restart.
    assert inbox.ids() == ["RDS-EVENT-0013", "RDS-EVENT-0015", "RDS-EVENT-0049"]


def test_subscription_filters(postgres_instance: Make, aws: Any) -> None:
    rds = aws.client("rds")
    boxes = {name: Inbox(aws, name) for name in ("everything", "other-id", "disabled", "creation", "snapshots")}
    rds.create_event_subscription(SubscriptionName="everything", SnsTopicArn=boxes["everything"].topic)
    rds.create_event_subscription(SubscriptionName="other-id", SnsTopicArn=boxes["other-id"].topic,
                                  SourceType="db-instance", SourceIds=["someone-else"])
    rds.create_event_subscription(SubscriptionName="disabled", SnsTopicArn=boxes["disabled"].topic,
                                  SourceType="db-instance", Enabled=False)
    rds.create_event_subscription(SubscriptionName="creation", SnsTopicArn=boxes["creation"].topic,
                                  SourceType="db-instance", EventCategories=["creation"])
    rds.create_event_subscription(SubscriptionName="snapshots", SnsTopicArn=boxes["snapshots"].topic,
                                  SourceType="db-snapshot")
    subs = {s["CustSubscriptionId"]: s for s in rds.describe_event_subscriptions()["EventSubscriptionsList"]}
    assert subs["everything"]["Enabled"] is True and subs["disabled"]["Enabled"] is False
    first = postgres_instance("first")
    postgres_instance("second")
    rds.reboot_db_instance(DBInstanceIdentifier=first.identifier)
    # Delivery is done when the (fast-profile) call returns: the empty inboxes are final.
    everything = boxes["everything"].events()
    assert [(e["Source ID"], e["Event ID"].rsplit("#")[1]) for e in everything] == [
        ("first", "RDS-EVENT-0005"), ("second", "RDS-EVENT-0005"), ("first", "RDS-EVENT-0006")]
    assert [e["Source ID"] for e in boxes["creation"].events()] == ["first", "second"]
    assert boxes["other-id"].events() == []
    assert boxes["disabled"].events() == []
    assert boxes["snapshots"].events() == []
    rds.modify_event_subscription(SubscriptionName="disabled", Enabled=True)
    rds.reboot_db_instance(DBInstanceIdentifier="second")
    assert [e["Source ID"] for e in boxes["disabled"].events()] == ["second"]


def test_describe_events_lists_what_happened(postgres_instance: Make, aws: Any) -> None:
    source = postgres_instance("src")
    postgres_instance("src-ro", source=source)
    rds = aws.client("rds")
    rds.promote_read_replica(DBInstanceIdentifier="src-ro")
    events = rds.describe_events(SourceIdentifier="src-ro", SourceType="db-instance")["Events"]
    assert [(e["EventCategories"], e["Message"]) for e in events] == [
        (["creation"], "DB instance created"),
        (["read replica"], "Replication for the Read Replica resumed."),
        (["read replica"], "Replication for the Read Replica terminated. The read replica was promoted."),
        (["availability"], "DB instance restarted"),
    ]
    assert all(e["SourceArn"].endswith(":db:src-ro") and e["SourceType"] == "db-instance" for e in events)


def test_change_subscriptions(postgres_instance: Make, aws: Any) -> None:
    rds = aws.client("rds")
    inbox = Inbox(aws, "changes")
    rds.create_event_subscription(SubscriptionName="s", SnsTopicArn=inbox.topic, SourceType="db-instance",
                                  SourceIds=["nobody"])
    answer = rds.add_source_identifier_to_subscription(SubscriptionName="s", SourceIdentifier="watched")
    assert answer["EventSubscription"]["SourceIdsList"] == ["nobody", "watched"]
    postgres_instance("watched")
    postgres_instance("ignored")
    assert [e["Source ID"] for e in inbox.events()] == ["watched"]
    rds.remove_source_identifier_from_subscription(SubscriptionName="s", SourceIdentifier="nobody")
    answer = rds.modify_event_subscription(SubscriptionName="s", EventCategories=["availability"])
    assert answer["EventSubscription"]["EventCategoriesList"] == ["availability"]
    assert answer["EventSubscription"]["SourceIdsList"] == ["watched"]
    rds.reboot_db_instance(DBInstanceIdentifier="watched")
    assert [e["Event Message"] for e in inbox.events()[1:]] == ["DB instance restarted"]
    with pytest.raises(rds.exceptions.SubscriptionNotFoundFault, match="missing"):
        rds.modify_event_subscription(SubscriptionName="missing", Enabled=False)
