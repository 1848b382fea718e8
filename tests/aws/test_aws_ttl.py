"""TTL on the controllable clock: expired items stay readable until swept, the sweep's stream record carries
the DynamoDB service identity (a user's delete carries none), and AWS's UpdateTimeToLive rules."""
from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from harness.aws.dynamodb.ttl import default_ttl_delay
from harness.aws.endpoint import AwsEndpoint
from harness.clock import Clock
from harness.wait import wait_until

SERVICE = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}  # as GetRecords spells it


def stream_records(aws: AwsEndpoint, table: Any) -> list[dict[str, Any]]:
    streams = aws.client("dynamodbstreams", region=table.region)
    shard = streams.describe_stream(StreamArn=table.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=table.stream_arn, ShardId=shard,
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records: list[dict[str, Any]] = streams.get_records(ShardIterator=it)["Records"]
    return records


def _get(client: Any, pk: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = client.get_item(TableName="sessions", Key={"pk": {"S": pk}},
                                                  ConsistentRead=True).get("Item")
    return item


def test_expired_item_is_readable_until_swept_then_removed_by_the_service(aws: AwsEndpoint, clock: Clock,
                                                                         dynamodb_table: Any) -> None:
    clock.freeze()
    aws.dynamodb.ttl.delay = 300  # sweep five minutes after expiry
    table = dynamodb_table("sessions", ttl_attribute="expires", stream=True, region="eu-west-1")
    client = table.client
    now = int(clock.time())
    client.put_item(TableName="sessions", Item={"pk": {"S": "old"}, "expires": {"N": str(now + 60)}})
    client.put_item(TableName="sessions", Item={"pk": {"S": "keep"}, "expires": {"N": str(now + 3600)}})
    client.put_item(TableName="sessions", Item={"pk": {"S": "mine"}})
    client.delete_item(TableName="sessions", Key={"pk": {"S": "mine"}})
    clock.advance(120)  # "old" has expired, but the sweeper has not come by yet
    assert _get(client, "old") is not None
    clock.advance(300)
    assert _get(client, "old") is None and _get(client, "keep") is not None
    removes = {r["dynamodb"]["Keys"]["pk"]["S"]: r for r in stream_records(aws, table) if r["eventName"] == "REMOVE"}
    assert removes["old"]["userIdentity"] == SERVICE
    assert "userIdentity" not in removes["mine"]
    assert {r["awsRegion"] for r in removes.values()} == {"eu-west-1"}


def test_background_sweep_follows_real_time(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any) -> None:
    table = dynamodb_table("sessions", ttl_attribute="expires")
    past = int(clock.time()) - 1
    table.client.put_item(TableName="sessions", Item={"pk": {"S": "gone"}, "expires": {"N": str(past)}})
    wait_until(lambda: _get(table.client, "gone") is None, 5, what="the background sweep")


def test_only_numbers_within_five_years_expire(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any) -> None:
    clock.freeze()
    table = dynamodb_table("sessions", ttl_attribute="expires")
    now = int(clock.time())
    for pk, value in (("string", {"S": str(now - 10)}), ("ancient", {"N": str(now - 6 * 365 * 86400)}),
                      ("millis", {"N": str(now * 1000 + 10)}), ("due", {"N": str(now - 10)})):
        table.client.put_item(TableName="sessions", Item={"pk": {"S": pk}, "expires": value})
    clock.advance(1)
    assert [pk for pk in ("string", "ancient", "millis", "due") if _get(table.client, pk)] == [
        "string", "ancient", "millis"]


def test_update_time_to_live_rules(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any) -> None:
    clock.freeze()
    table = dynamodb_table("sessions", ttl_attribute="expires")
    spec = {"Enabled": False, "AttributeName": "expires"}
    with pytest.raises(ClientError) as err:
        table.client.update_time_to_live(TableName="sessions", TimeToLiveSpecification=spec)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "modified multiple times within a fixed interval" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="already enabled"):
        table.client.update_time_to_live(TableName="sessions", TimeToLiveSpecification={**spec, "Enabled": True})
    clock.advance(3600)
    table.client.update_time_to_live(TableName="sessions", TimeToLiveSpecification=spec)
    status = table.client.describe_time_to_live(TableName="sessions")["TimeToLiveDescription"]
    assert status["TimeToLiveStatus"] == "DISABLED"


def test_default_delays_per_time_profile() -> None:
    assert default_ttl_delay("fast") == 0.0
    assert default_ttl_delay("aws") == 3600.0
