"""A region outage over real sockets: harness clients (through the region's fault proxy) and app clients
(one AWS_ENDPOINT_URL) both lose the region, the other region keeps serving, global-table replication
pauses and catches up after the heal."""
from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from faults.base import Timeline
from faults.outage import region_outage
from harness.aws.endpoint import AwsEndpoint
from harness.wait import wait_until

EAST, WEST = "us-east-1", "eu-west-1"
FAST = Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1)
REFUSED = (EndpointConnectionError, ConnectionClosedError)


def value(client: Any, key: str) -> str | None:
    item = client.get_item(TableName="carts", Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
    return item["v"]["S"] if item else None


@pytest.fixture
def clients(aws: AwsEndpoint, aws_env: dict[str, str], dynamodb_table: Any) -> dict[str, Any]:
    dynamodb_table("carts", region=EAST)
    aws.client("dynamodb", region=EAST).update_table(TableName="carts",
                                                     ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
    return {
        "east": aws.client("dynamodb", region=EAST, config=FAST),
        "west": aws.client("dynamodb", region=WEST, config=FAST),
        "app_east": boto3.client("dynamodb", region_name=EAST, config=FAST),
        "app_west": boto3.client("dynamodb", region_name=WEST, config=FAST),
    }


def test_refuse_outage_cuts_one_region_and_replication_catches_up(aws: AwsEndpoint, clients: dict[str, Any],
                                                                  fault_timeline: Timeline) -> None:
    c = clients
    c["east"].put_item(TableName="carts", Item={"pk": {"S": "before"}, "v": {"S": "east"}})
    wait_until(lambda: value(c["west"], "before") == "east", 5, what="east -> west")
    with region_outage(EAST):
        for name in ("east", "app_east"):
            with pytest.raises(REFUSED):
                c[name].get_item(TableName="carts", Key={"pk": {"S": "before"}})
        c["app_west"].put_item(TableName="carts", Item={"pk": {"S": "during"}, "v": {"S": "west"}})
        assert value(c["west"], "during") == "west" and value(c["app_west"], "before") == "east"
        aws.dynamodb.global_tables.replicate()
        assert not aws.dynamodb.global_tables.caught_up()  # held back while us-east-1 is down
    aws.wait_replicated()
    assert value(c["east"], "during") == value(c["app_east"], "during") == "west"
    (event,) = [e for e in fault_timeline.events if e.kind == "region-outage"]
    assert event.target == EAST and event.params["mode"] == "refuse" and event.end is not None
    assert event.params["parts"] == [f"aws-region-cut:{EAST}", "network-partition"]


def test_blackhole_outage_times_out_both_kinds_of_client(aws: AwsEndpoint, clients: dict[str, Any]) -> None:
    c = clients
    with region_outage(EAST, "blackhole"):
        for name in ("east", "app_east"):
            with pytest.raises(ReadTimeoutError):
                c[name].list_tables()
        assert c["app_west"].list_tables()["TableNames"] == ["carts"]
    for name in ("east", "app_east"):
        assert c[name].list_tables()["TableNames"] == ["carts"]
