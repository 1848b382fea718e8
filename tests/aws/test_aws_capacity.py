"""DynamoDB capacity by AWS's rules, on the controllable clock: exact token-bucket arithmetic for provisioned
tables and GSIs, read/write unit sizes, batches with unprocessed items, transactions, on-demand peaks."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness.aws.dynamodb.items import item_size
from harness.aws.endpoint import AwsEndpoint
from harness.clock import Clock

PTEE = "ProvisionedThroughputExceededException"


def sized(pk: str, size: int, **extra: dict[str, str]) -> dict[str, Any]:
    """An item of exactly ``size`` bytes by DynamoDB's rules."""
    item: dict[str, Any] = {"pk": {"S": pk}, **extra, "pad": {"S": ""}}
    item["pad"] = {"S": "x" * (size - item_size(item))}
    assert item_size(item) == size
    return item


def put(client: Any, table: str, item: dict[str, Any], **kw: Any) -> Any:
    return client.put_item(TableName=table, Item=item, **kw)


def batch_put(client: Any, table: str, items: list[dict[str, Any]]) -> int:
    """Write in batches of 25; returns how many items came back unprocessed."""
    left = 0
    for i in range(0, len(items), 25):
        chunk = [{"PutRequest": {"Item": it}} for it in items[i:i + 25]]
        left += len(client.batch_write_item(RequestItems={table: chunk}).get("UnprocessedItems", {}).get(table, []))
    return left


def throttled(fn: Callable[[], Any]) -> bool:
    try:
        fn()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == PTEE, exc
        return True
    return False


def test_provisioned_5_wcu_bursts_then_sustains_5_writes_per_second(aws: AwsEndpoint, clock: Clock,
                                                                    dynamodb_table: Any, no_retry: Config) -> None:
    clock.freeze()
    dynamodb_table("orders", rcu=5, wcu=5)
    client = aws.client("dynamodb", config=no_retry)
    # A new table starts with a full burst bucket: 300 s x 5 WCU = 1500 one-KB writes.
    assert batch_put(client, "orders", [sized(f"b{i}", 1024) for i in range(1500)]) == 0
    assert throttled(lambda: put(client, "orders", sized("over", 1024)))
    with aws.lock:  # the throttled write changed nothing
        assert len(aws.backend("dynamodb").tables["orders"].all_items()) == 1500
    for second in range(5):  # sustained: exactly 5 writes per second
        clock.advance(1.0)
        for i in range(5):
            put(client, "orders", sized(f"s{second}-{i}", 1024))
        assert throttled(lambda: put(client, "orders", sized("extra", 1024)))
    clock.advance(0.2)  # 0.2 s x 5 WCU = one more write
    put(client, "orders", sized("fifth", 1024))
    assert throttled(lambda: put(client, "orders", sized("sixth", 1024)))
    clock.advance(1.0)  # a 1025-byte item costs two units
    assert put(client, "orders", sized("big", 1025), ReturnConsumedCapacity="TOTAL")["ConsumedCapacity"] == {
        "TableName": "orders", "CapacityUnits": 2.0, "WriteCapacityUnits": 2.0}
    clock.advance(10_000)  # unused capacity is kept for 300 s only
    assert batch_put(client, "orders", [sized(f"r{i}", 1024) for i in range(1500)]) == 0
    assert throttled(lambda: put(client, "orders", sized("again", 1024)))


def test_read_units(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    dynamodb_table("r", rcu=100, wcu=100)
    client = aws.client("dynamodb")
    for pk, size in (("small", 4096), ("big", 4097)):
        put(client, "r", sized(pk, size))

    def units(**kw: Any) -> float:
        cap: float = client.get_item(TableName="r", ReturnConsumedCapacity="TOTAL", **kw)["ConsumedCapacity"][
            "CapacityUnits"]
        return cap

    assert units(Key={"pk": {"S": "small"}}, ConsistentRead=True) == 1.0
    assert units(Key={"pk": {"S": "small"}}) == 0.5
    assert units(Key={"pk": {"S": "big"}}, ConsistentRead=True) == 2.0
    assert units(Key={"pk": {"S": "missing"}}, ConsistentRead=True) == 1.0
    got = client.transact_get_items(TransactItems=[{"Get": {"TableName": "r", "Key": {"pk": {"S": "big"}}}}],
                                    ReturnConsumedCapacity="TOTAL")
    assert got["ConsumedCapacity"][0]["CapacityUnits"] == 4.0
    # A scan pays for every byte read before its filter: 4096 + 4097 bytes -> 3 units (strongly consistent).
    scan = client.scan(TableName="r", ConsistentRead=True, ReturnConsumedCapacity="TOTAL",
                       FilterExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "small"}})
    assert scan["Count"] == 1 and scan["ConsumedCapacity"]["CapacityUnits"] == 3.0
    query = client.query(TableName="r", KeyConditionExpression="pk = :p", ReturnConsumedCapacity="TOTAL",
                         ExpressionAttributeValues={":p": {"S": "big"}})
    assert query["ConsumedCapacity"]["CapacityUnits"] == 1.0  # 4097 bytes, eventually consistent


def test_gsi_writes_consume_and_throttle_the_index(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any,
                                                   no_retry: Config) -> None:
    clock.freeze()
    dynamodb_table("jobs", rcu=50, wcu=50, gsis=[("byStatus", "status", None, 1, 1)])
    client = aws.client("dynamodb", config=no_retry)
    status = {"status": {"S": "new"}}
    out = put(client, "jobs", sized("j0", 1024, **status), ReturnConsumedCapacity="INDEXES")["ConsumedCapacity"]
    assert out["CapacityUnits"] == 2.0 and out["Table"]["CapacityUnits"] == 1.0
    assert out["GlobalSecondaryIndexes"] == {"byStatus": {"CapacityUnits": 1.0, "WriteCapacityUnits": 1.0}}
    sparse = put(client, "jobs", sized("j1", 1024), ReturnConsumedCapacity="INDEXES")["ConsumedCapacity"]
    assert sparse["CapacityUnits"] == 1.0 and "GlobalSecondaryIndexes" not in sparse
    # Changing the index key costs two index writes (delete + put).
    moved = client.update_item(TableName="jobs", Key={"pk": {"S": "j0"}}, UpdateExpression="SET #s = :d",
                               ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={
                                   ":d": {"S": "old"}}, ReturnConsumedCapacity="INDEXES")["ConsumedCapacity"]
    assert moved["GlobalSecondaryIndexes"]["byStatus"]["CapacityUnits"] == 2.0
    # The GSI's bucket (1 WCU -> 300 units) runs dry before the table's: the table write is throttled.
    assert batch_put(client, "jobs", [sized(f"g{i}", 1024, **status) for i in range(297)]) == 0
    assert throttled(lambda: put(client, "jobs", sized("g-over", 1024, **status)))
    assert "Item" not in client.get_item(TableName="jobs", Key={"pk": {"S": "g-over"}})
    put(client, "jobs", sized("no-index", 1024))  # a write the index does not see still goes through


def test_update_table_capacity_takes_effect(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any,
                                            no_retry: Config) -> None:
    clock.freeze()
    dynamodb_table("t", rcu=1, wcu=1)
    client = aws.client("dynamodb", config=no_retry)
    assert batch_put(client, "t", [sized(f"i{i}", 1000) for i in range(300)]) == 0
    assert throttled(lambda: put(client, "t", sized("x", 1000)))
    client.update_table(TableName="t", ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 100})
    clock.advance(1.0)
    assert batch_put(client, "t", [sized(f"n{i}", 1000) for i in range(100)]) == 0
    assert throttled(lambda: put(client, "t", sized("y", 1000)))


def test_batches_return_unprocessed_items_and_transactions_cancel(aws: AwsEndpoint, clock: Clock,
                                                                  dynamodb_table: Any, no_retry: Config) -> None:
    clock.freeze()
    dynamodb_table("t", rcu=1, wcu=1)
    client = aws.client("dynamodb", config=no_retry)
    assert batch_put(client, "t", [sized(f"i{i}", 1000) for i in range(290)]) == 0
    batch = [{"PutRequest": {"Item": sized(f"b{i}", 1000)}} for i in range(25)]
    left = client.batch_write_item(RequestItems={"t": batch})["UnprocessedItems"]["t"]
    assert [e["PutRequest"]["Item"]["pk"]["S"] for e in left] == [f"b{i}" for i in range(10, 25)]
    with aws.lock:
        assert len(aws.backend("dynamodb").tables["t"].all_items()) == 300
    with pytest.raises(ClientError) as err:  # nothing left at all: the whole batch is throttled
        client.batch_write_item(RequestItems={"t": batch[10:]})
    assert err.value.response["Error"]["Code"] == PTEE
    with pytest.raises(ClientError) as err:
        client.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": sized("tx", 100)}}])
    assert err.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert err.value.response["CancellationReasons"] == [{"Code": "ThrottlingError", "Message": (
        "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your "
        "table or index so please try again shortly.")}]
    # Reads: 1 RCU -> 300 units of burst; 0.5 per eventually consistent small read, 1 when consistent.
    keys = [{"pk": {"S": f"i{i}"}} for i in range(100)]
    for _ in range(5):
        assert client.batch_get_item(RequestItems={"t": {"Keys": keys}}).get("UnprocessedKeys", {}) == {}
    got = client.batch_get_item(RequestItems={"t": {"Keys": keys, "ConsistentRead": True}})
    assert len(got["Responses"]["t"]) == 50
    assert got["UnprocessedKeys"]["t"]["Keys"] == keys[50:] and got["UnprocessedKeys"]["t"]["ConsistentRead"]
    assert throttled(lambda: client.get_item(TableName="t", Key={"pk": {"S": "i1"}}))


def test_failed_conditions_still_consume_capacity(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any,
                                                  no_retry: Config) -> None:
    clock.freeze()
    dynamodb_table("t", rcu=1, wcu=1)
    client = aws.client("dynamodb", config=no_retry)
    put(client, "t", sized("a", 2000))
    with aws.lock:
        table = aws.backend("dynamodb").tables["t"]
        before = aws.dynamodb.capacity.available(table)
    with pytest.raises(ClientError) as err:
        put(client, "t", sized("a", 100), ConditionExpression="attribute_not_exists(pk)")
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    with aws.lock:
        assert before - aws.dynamodb.capacity.available(table) == 2.0  # the larger of old (2000 B) and new


def test_on_demand_takes_double_the_previous_peak(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any,
                                                  no_retry: Config) -> None:
    clock.freeze()
    dynamodb_table("od")
    client = aws.client("dynamodb", config=no_retry)
    # New on-demand tables start at 4000 write units per second (moto's default warm throughput).
    assert batch_put(client, "od", [sized(f"a{i}", 4096) for i in range(1000)]) == 0
    assert throttled(lambda: put(client, "od", sized("over", 4096)))
    clock.advance(1.0)  # previous peak 4000 -> up to 8000 units in one second, at once
    assert batch_put(client, "od", [sized(f"b{i}", 4096) for i in range(2000)]) == 0
    assert throttled(lambda: put(client, "od", sized("over", 4096)))


def test_capacity_off_still_reports_consumption(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any,
                                                no_retry: Config) -> None:
    clock.freeze()
    aws.dynamodb.capacity.enabled = False
    dynamodb_table("t", rcu=1, wcu=1)
    client = aws.client("dynamodb", config=no_retry)
    assert batch_put(client, "t", [sized(f"i{i}", 1024) for i in range(400)]) == 0
    assert put(client, "t", sized("x", 3000), ReturnConsumedCapacity="TOTAL")["ConsumedCapacity"][
        "CapacityUnits"] == 3.0


def test_a_hot_partition_key_throttles_at_1000_writes_and_3000_reads_per_second(
        aws: AwsEndpoint, clock: Clock, dynamodb_table: Any, no_retry: Config) -> None:
    clock.freeze()
    dynamodb_table("events", range_key="sk")  # on demand: the table could take 4000 units this second
    client = aws.client("dynamodb", config=no_retry)

    def item(pk: str, sk: int) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": f"{sk:05d}"}}

    items = [item("hot", i) for i in range(1000)]
    assert batch_put(client, "events", items) == 0  # 1000 one-unit writes to one partition key: its limit
    with pytest.raises(ClientError) as exc:
        put(client, "events", item("hot", 1000))
    error = exc.value.response
    assert error["Error"]["Code"] == PTEE and "hot key" in error["Error"]["Message"]
    arn = client.describe_table(TableName="events")["Table"]["TableArn"]
    assert error["ThrottlingReasons"] == [{"reason": "TableWriteKeyRangeThroughputExceeded", "resource": arn}]
    put(client, "events", item("cold", 0))  # other keys are fine: the table has capacity left
    # Batches: the hot key's items come back unprocessed, the others go through.
    left = client.batch_write_item(RequestItems={"events": [
        {"PutRequest": {"Item": item("hot", 2000)}}, {"PutRequest": {"Item": item("warm", 1)}}]})
    assert left["UnprocessedItems"]["events"] == [{"PutRequest": {"Item": item("hot", 2000)}}]
    # Transactions: cancelled with ThrottlingError on the hot item only.
    with pytest.raises(ClientError) as txn:
        client.transact_write_items(TransactItems=[{"Put": {"TableName": "events", "Item": item("warm", 2)}},
                                                   {"Put": {"TableName": "events", "Item": item("hot", 3000)}}])
    assert [r["Code"] for r in txn.value.response["CancellationReasons"]] == ["None", "ThrottlingError"]
    clock.advance(1.0)  # a new second: the partition serves again
    big = {**item("hot", 1001), "pad": {"S": "x" * 40_000}}  # 40 KB: 10 read units strongly consistent
    put(client, "events", big)
    # Reads: 300 strongly consistent reads of it are the partition's 3000 units for this second.
    for _ in range(300):
        client.get_item(TableName="events", Key=item("hot", 1001), ConsistentRead=True)
    with pytest.raises(ClientError) as read:
        client.get_item(TableName="events", Key=item("hot", 1001), ConsistentRead=True)
    assert read.value.response["ThrottlingReasons"][0]["reason"] == "TableReadKeyRangeThroughputExceeded"
    client.get_item(TableName="events", Key=item("cold", 0), ConsistentRead=True)


def test_provisioned_throttling_names_its_reason(aws: AwsEndpoint, clock: Clock, dynamodb_table: Any,
                                                 no_retry: Config) -> None:
    clock.freeze()
    dynamodb_table("small", rcu=1, wcu=10, gsis=[("by-kind", "kind", None, 1, 1)])
    client = aws.client("dynamodb", config=no_retry)
    arn = client.describe_table(TableName="small")["Table"]["TableArn"]
    assert batch_put(client, "small", [sized(f"i{i}", 10 * 1024) for i in range(300)]) == 0  # the table's burst
    with pytest.raises(ClientError) as exc:
        put(client, "small", sized("over", 1024))
    assert exc.value.response["ThrottlingReasons"] == [
        {"reason": "TableWriteProvisionedThroughputExceeded", "resource": arn}]
    clock.advance(400)  # buckets full again; now fill the index's (1 WCU: 300 units), the table has 3000
    assert batch_put(client, "small", [sized(f"g{i}", 1024, kind={"S": "k"}) for i in range(300)]) == 0
    with pytest.raises(ClientError) as gsi:
        put(client, "small", sized("g-over", 1024, kind={"S": "k"}))
    assert gsi.value.response["ThrottlingReasons"] == [
        {"reason": "IndexWriteProvisionedThroughputExceeded", "resource": f"{arn}/index/by-kind"}]
