"""Global tables (2019.11.21): replicas kept in sync through streams, last writer wins, replication paused by
a pause fault or a region cut and caught up after, TTL deletes identified only where they happened."""
from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from faults.base import FaultError
from faults.dynamodb import pause_replication
from faults.outage import RegionCut
from harness.aws.endpoint import AwsEndpoint
from harness.clock import Clock
from harness.wait import WaitTimeout, wait_until

EAST, WEST = "us-east-1", "eu-west-1"


def global_table(aws: AwsEndpoint, dynamodb_table: Any, name: str = "carts", **kw: Any) -> tuple[Any, Any]:
    table = dynamodb_table(name, region=EAST, **kw)
    table.client.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
    return aws.client("dynamodb", region=EAST), aws.client("dynamodb", region=WEST)


def value(client: Any, key: str, table: str = "carts") -> str | None:
    item = client.get_item(TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
    return item["v"]["S"] if item and "v" in item else None


def test_writes_replicate_both_ways(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    table = dynamodb_table("carts", region=EAST)
    table.client.put_item(TableName="carts", Item={"pk": {"S": "early"}, "v": {"S": "backfilled"}})
    desc = table.client.update_table(TableName="carts", ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
    assert desc["TableDescription"]["Replicas"] == [{"RegionName": WEST, "ReplicaStatus": "ACTIVE"}]
    east, west = aws.client("dynamodb", region=EAST), aws.client("dynamodb", region=WEST)
    described = west.describe_table(TableName="carts")["Table"]
    assert described["Replicas"] == [{"RegionName": EAST, "ReplicaStatus": "ACTIVE"}]
    assert described["GlobalTableVersion"] == "2019.11.21"
    assert value(west, "early") == "backfilled"
    east.put_item(TableName="carts", Item={"pk": {"S": "a"}, "v": {"S": "from-east"}})
    wait_until(lambda: value(west, "a") == "from-east", 5, what="east -> west")
    west.put_item(TableName="carts", Item={"pk": {"S": "b"}, "v": {"S": "from-west"}})
    wait_until(lambda: value(east, "b") == "from-west", 5, what="west -> east")
    east.delete_item(TableName="carts", Key={"pk": {"S": "a"}})
    wait_until(lambda: "Item" not in west.get_item(TableName="carts", Key={"pk": {"S": "a"}}), 5,
               what="delete east -> west")


def test_region_cut_pauses_replication_and_apps_see_connection_errors(aws: AwsEndpoint, dynamodb_table: Any,
                                                                      aws_env: dict[str, str]) -> None:
    global_table(aws, dynamodb_table)
    app_east = boto3.client("dynamodb", region_name=EAST, config=_fast_fail())
    app_west = boto3.client("dynamodb", region_name=WEST, config=_fast_fail())
    with RegionCut(aws, EAST, "refuse"):
        with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
            app_east.list_tables()
        app_west.put_item(TableName="carts", Item={"pk": {"S": "w"}, "v": {"S": "during"}})
        assert value(app_west, "w") == "during"
        aws.dynamodb.global_tables.replicate()
        assert not aws.dynamodb.global_tables.caught_up()
    aws.wait_replicated()
    assert value(app_east, "w") == "during"


def test_last_writer_wins_by_clock_time(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any) -> None:
    clock.freeze()
    east, west = global_table(aws, dynamodb_table)
    with pause_replication("carts", endpoint=aws):
        east.put_item(TableName="carts", Item={"pk": {"S": "k"}, "v": {"S": "east-later"}})
        west.put_item(TableName="carts", Item={"pk": {"S": "j"}, "v": {"S": "west-later"}})
        clock.advance(1)
        east.put_item(TableName="carts", Item={"pk": {"S": "j"}, "v": {"S": "east-earlier"}})
        clock.advance(1)
        west.put_item(TableName="carts", Item={"pk": {"S": "k"}, "v": {"S": "west-earlier"}})
        assert value(east, "k") == "east-later" and value(west, "k") == "west-earlier"
    aws.wait_replicated()
    # "k": the west write is the later one (t+2 > t); "j": the east write (t+1 > t).
    assert value(east, "k") == value(west, "k") == "west-earlier"
    assert value(east, "j") == value(west, "j") == "east-earlier"
    assert aws.dynamodb.global_tables.conflicts_lost >= 2


def test_same_instant_ties_go_to_the_later_received_write(aws: AwsEndpoint, clock: Clock,
                                                          dynamodb_table: Any) -> None:
    clock.freeze()
    east, west = global_table(aws, dynamodb_table)
    with pause_replication("carts", [WEST], endpoint=aws):
        west.put_item(TableName="carts", Item={"pk": {"S": "t"}, "v": {"S": "first"}})
        east.put_item(TableName="carts", Item={"pk": {"S": "t"}, "v": {"S": "second"}})
    aws.wait_replicated()
    assert value(east, "t") == value(west, "t") == "second"


def test_ttl_delete_is_a_service_delete_only_where_it_happened(aws: AwsEndpoint, clock: Clock,
                                                               dynamodb_table: Any) -> None:
    clock.freeze()
    east, west = global_table(aws, dynamodb_table, ttl_attribute="exp")
    assert west.describe_time_to_live(TableName="carts")["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    east.put_item(TableName="carts", Item={"pk": {"S": "s"}, "exp": {"N": str(int(clock.time()) + 10)}})
    aws.wait_replicated()
    clock.advance(11)
    aws.wait_replicated()
    assert "Item" not in west.get_item(TableName="carts", Key={"pk": {"S": "s"}})
    removes = {}
    for region in (EAST, WEST):
        streams = aws.client("dynamodbstreams", region=region)
        arn = aws.client("dynamodb", region=region).describe_table(TableName="carts")["Table"]["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        records = streams.get_records(ShardIterator=it["ShardIterator"])["Records"]
        (removes[region],) = [r for r in records if r["eventName"] == "REMOVE"]
    assert removes[EAST]["userIdentity"] == {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    assert "userIdentity" not in removes[WEST]


def test_legacy_create_global_table(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    for region in (EAST, WEST):
        dynamodb_table("legacy", region=region, stream=True)
    east, west = aws.client("dynamodb", region=EAST), aws.client("dynamodb", region=WEST)
    desc = east.create_global_table(GlobalTableName="legacy", ReplicationGroup=[{"RegionName": EAST},
                                                                                 {"RegionName": WEST}])
    assert desc["GlobalTableDescription"]["GlobalTableStatus"] == "ACTIVE"
    assert [r["RegionName"] for r in west.describe_global_table(GlobalTableName="legacy")[
        "GlobalTableDescription"]["ReplicationGroup"]] == [EAST, WEST]
    west.put_item(TableName="legacy", Item={"pk": {"S": "x"}, "v": {"S": "1"}})
    wait_until(lambda: value(east, "x", "legacy") == "1", 5, what="legacy replication")
    with pytest.raises(ClientError) as err:
        east.describe_global_table(GlobalTableName="nope")
    assert err.value.response["Error"]["Code"] == "GlobalTableNotFoundException"


def test_bad_global_table_requests(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    table = dynamodb_table("carts", region=EAST)
    with pytest.raises(ClientError, match="Region 'ap-south-9' is not emulated"):
        table.client.update_table(TableName="carts", ReplicaUpdates=[{"Create": {"RegionName": "ap-south-9"}}])
    with pytest.raises(ClientError, match="Requested resource not found"):
        table.client.update_table(TableName="nope", ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
    with pytest.raises(FaultError, match="'carts' is not a global table"):
        pause_replication("carts", endpoint=aws).start()
    table.client.update_table(TableName="carts", ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
    with pytest.raises(FaultError, match="carts has no replica in us-west-2"):
        pause_replication("carts", ["us-west-2"], endpoint=aws).start()


def _fast_fail() -> Any:
    from botocore.config import Config

    return Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)


def test_a_lingering_pause_lets_replication_go_on_first(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    """As after FIS starts pausing on AWS, replication goes on for ``linger`` seconds before the pause holds."""
    east, west = global_table(aws, dynamodb_table)
    tables = aws.dynamodb.global_tables
    group = tables.group("carts")
    assert group is not None
    with pause_replication("carts", [WEST], endpoint=aws, linger=0.5) as fault:
        assert not tables._paused(group, WEST)
        east.put_item(TableName="carts", Item={"pk": {"S": "early"}, "v": {"S": "1"}})
        wait_until(lambda: value(west, "early") == "1", 5, what="replication while the pause lingers")
        wait_until(lambda: tables._paused(group, WEST), 5, what="the pause to hold")
        east.put_item(TableName="carts", Item={"pk": {"S": "late"}, "v": {"S": "2"}})
        with pytest.raises(WaitTimeout):  # a bounded look: paused, nothing arrives
            wait_until(lambda: value(west, "late") == "2", 0.3, what="late")
        assert fault.describe()["linger"] == 0.5
    wait_until(lambda: value(west, "late") == "2", 5, what="the backlog after the heal")
    with pause_replication("carts", endpoint=aws, linger=30):  # healed before it ever held
        pass
    assert not tables._paused(group, WEST)
    with pytest.raises(FaultError, match="linger"):
        pause_replication("carts", endpoint=aws, linger=-1)


def test_fis_pause_lingers_only_with_the_aws_profile() -> None:
    import random
    from types import SimpleNamespace

    from faults.dynamodb import FIS_MAX_LINGER, _fis_linger

    ctx = SimpleNamespace(rng=random.Random(1), time_scale=0.01)
    aws_profile = SimpleNamespace(settings=SimpleNamespace(time_profile="aws"))
    fast = SimpleNamespace(settings=SimpleNamespace(time_profile="fast"))
    drawn = [_fis_linger(aws_profile, ctx) for _ in range(50)]
    assert all(0 <= d <= FIS_MAX_LINGER * 0.01 for d in drawn) and len(set(drawn)) > 1
    assert _fis_linger(fast, ctx) == 0.0
