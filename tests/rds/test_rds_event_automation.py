"""The seed's automation pattern, end to end on the emulator: an RDS event goes through an event subscription
to SNS, SNS to SQS, an SQS-triggered handler (suites.automation.handler: boto3 calls only, unchanged from what
would run in Lambda) promotes the cross-region replica and UPSERTs the app's Route53 record."""
from __future__ import annotations

import ast
import inspect
import json
import socket
from typing import Any

import pytest

import suites.automation as automation
from faults.database import kill_primary
from harness.wait import wait_until


def test_automation_uses_only_boto3_and_the_standard_library() -> None:
    tree = ast.parse(inspect.getsource(automation))
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
              and node.module}
    assert roots <= {"__future__", "json", "logging", "os", "typing", "boto3", "botocore"}, roots


def test_rds_event_drives_promotion_and_dns_flip(postgres_instance: Any, aws: Any, aws_env: Any,
                                                 dns_resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    home, dr = "us-west-2", "us-east-1"
    primary = postgres_instance("orders", region=home)
    replica = postgres_instance("orders-dr", source=primary, region=dr)
    route53 = aws.client("route53")
    zone = route53.create_hosted_zone(Name="shop.internal", CallerReference="auto", HostedZoneConfig={
        "PrivateZone": True, "Comment": ""}, VPC={"VPCRegion": home, "VPCId": "vpc-1"})["HostedZone"]["Id"]
    route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "UPSERT",
        "ResourceRecordSet": {"Name": "db.shop.internal", "Type": "CNAME", "TTL": 1,
                              "ResourceRecords": [{"Value": primary.address}]}}]})
    sns, sqs = aws.client("sns", region=home), aws.client("sqs", region=home)
    topic = sns.create_topic(Name="rds-events")["TopicArn"]
    queue = sqs.create_queue(QueueName="automation")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    aws.client("rds", region=home).create_event_subscription(
        SubscriptionName="primary-down", SnsTopicArn=topic, SourceType="db-instance", SourceIds=["orders"],
        EventCategories=["availability", "failure"])
    for key, value in {"DR_REPLICA_ID": "orders-dr", "DR_REGION": dr, "DR_ZONE_ID": zone,
                       "DR_RECORD_NAME": "db.shop.internal"}.items():
        monkeypatch.setenv(key, value)

    with kill_primary(primary):  # the primary crashes; RDS restarts it and says so
        messages: list[dict[str, Any]] = []
        wait_until(lambda: messages.extend(sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
                                           .get("Messages", [])) or messages, 20, what="an RDS event in SQS")
    event = {"Records": [{"messageId": m["MessageId"], "body": m["Body"], "eventSource": "aws:sqs"}
                         for m in messages]}
    body = json.loads(messages[0]["Body"])
    assert body["Subject"] == "RDS Notification Message"
    result = automation.handler(event, None)  # what Lambda would call

    assert result == {"failovers": [replica.address]}
    assert "ReadReplicaSourceDBInstanceIdentifier" not in replica.describe()
    dns_resolver.flush()
    assert socket.gethostbyname("db.shop.internal") == socket.gethostbyname(replica.address)
    with replica.connect() as conn:
        conn.execute("CREATE TABLE after_failover (id int)")  # writable: promoted


def test_ignored_events_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DR_REPLICA_ID", "x")
    body = json.dumps({"Message": json.dumps({"Event ID": "http://x#RDS-EVENT-0088", "Source ID": "a"})})
    assert automation.handler({"Records": [{"body": body}]}) == {"failovers": []}
