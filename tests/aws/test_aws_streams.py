"""DynamoDB Streams -> Python handlers like a Lambda event source mapping: real event shape, order, batch
size, retries, bisect-on-error and the on-failure SQS destination in Lambda's message shape."""
from __future__ import annotations

import json
from typing import Any

import pytest

from harness.aws.endpoint import AwsEndpoint
from harness.errors import HarnessError


def flat(batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b]


def pk(record: dict[str, Any]) -> str:
    value: str = record["dynamodb"]["Keys"]["pk"]["S"]
    return value


def test_batches_arrive_in_order_with_lambdas_event_shape(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    table = dynamodb_table("events", stream=True, region="us-west-2")
    batches: list[list[dict[str, Any]]] = []
    mapping = aws.dynamodb_stream_handler("events", lambda event: batches.append(event["Records"]),
                                          region="us-west-2", batch_size=3)
    client = table.client
    for i in range(10):
        client.put_item(TableName="events", Item={"pk": {"S": f"k{i}"}, "n": {"N": str(i)}})
    client.update_item(TableName="events", Key={"pk": {"S": "k0"}}, UpdateExpression="SET n = :v",
                       ExpressionAttributeValues={":v": {"N": "100"}})
    client.delete_item(TableName="events", Key={"pk": {"S": "k1"}})
    client.update_item(TableName="events", Key={"pk": {"S": "new"}}, UpdateExpression="SET n = :v",
                       ExpressionAttributeValues={":v": {"N": "7"}})
    mapping.wait_caught_up()
    records = flat(batches)
    assert all(1 <= len(b) <= 3 for b in batches) and len(records) == 13
    assert [(r["eventName"], pk(r)) for r in records] == [("INSERT", f"k{i}") for i in range(10)] + [
        ("MODIFY", "k0"), ("REMOVE", "k1"), ("INSERT", "new")]  # one INSERT for an update that creates
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 13
    first, modify = records[0], records[10]
    assert first["eventSource"] == "aws:dynamodb" and first["awsRegion"] == "us-west-2"
    assert first["eventSourceARN"] == table.stream_arn and first["eventVersion"] == "1.0"
    assert first["dynamodb"]["NewImage"] == {"pk": {"S": "k0"}, "n": {"N": "0"}}
    assert first["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert isinstance(first["dynamodb"]["ApproximateCreationDateTime"], int | float)
    assert first["dynamodb"]["SizeBytes"] > 0 and "userIdentity" not in first
    assert modify["dynamodb"]["OldImage"]["n"] == {"N": "0"} and modify["dynamodb"]["NewImage"]["n"] == {"N": "100"}


def test_failed_batch_is_retried_until_it_succeeds(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    table = dynamodb_table("events", stream=True)
    calls: list[list[str]] = []

    def flaky(event: dict[str, Any], context: Any) -> None:
        calls.append([pk(r) for r in event["Records"]])
        assert context.function_name == "orders-projector"
        if len(calls) <= 2:
            raise RuntimeError("downstream not ready")

    mapping = aws.dynamodb_stream_handler("events", flaky, batch_size=10, function_name="orders-projector")
    for i in range(4):
        table.client.put_item(TableName="events", Item={"pk": {"S": f"k{i}"}})
    mapping.wait_caught_up()
    delivered = calls[2:]
    assert calls[0] == calls[1] == calls[2]  # the same batch again, same order
    assert [k for c in delivered for k in c] == [f"k{i}" for i in range(4)]
    assert mapping.failed_invocations == 2 and mapping.delivered == 4


def test_bisect_isolates_the_poison_record_and_sends_it_to_the_failure_queue(aws: AwsEndpoint,
                                                                             dynamodb_table: Any) -> None:
    table = dynamodb_table("events", stream=True)
    sqs = aws.client("sqs")
    queue = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    ok: list[str] = []

    def handler(event: dict[str, Any]) -> None:
        keys = [pk(r) for r in event["Records"]]
        if "k6" in keys:
            raise ValueError("cannot parse k6")
        ok.extend(keys)

    for i in range(10):  # written first, so the first batch holds all ten
        table.client.put_item(TableName="events", Item={"pk": {"S": f"k{i}"}})
    mapping = aws.dynamodb_stream_handler("events", handler, batch_size=10, bisect_on_error=True, max_retries=1,
                                          on_failure=queue)
    mapping.wait_caught_up()
    assert ok == [f"k{i}" for i in range(10) if i != 6]
    assert mapping.batches[0] == 10 and min(mapping.batches) == 1
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    info = body["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1 and info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["streamArn"] == table.stream_arn and info["shardId"].startswith("shardId-")
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert body["requestContext"]["approximateInvokeCount"] == 2
    assert body["requestContext"]["functionArn"].startswith("arn:aws:lambda:us-east-1:123456789012:function:")
    assert body["responseContext"]["functionError"] == "Unhandled" and body["version"] == "1.0"


def test_without_bisect_the_whole_batch_fails_over(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    table = dynamodb_table("events", stream=True)
    sqs = aws.client("sqs")
    queue_arn = sqs.get_queue_attributes(QueueUrl=sqs.create_queue(QueueName="dlq")["QueueUrl"],
                                         AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def always_fails(event: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    for i in range(5):
        table.client.put_item(TableName="events", Item={"pk": {"S": f"k{i}"}})
    mapping = aws.dynamodb_stream_handler("events", always_fails, batch_size=5, max_retries=0, on_failure=queue_arn)
    mapping.wait_caught_up()
    (message,) = sqs.receive_message(QueueUrl=sqs.get_queue_url(QueueName="dlq")["QueueUrl"])["Messages"]
    assert json.loads(message["Body"])["DDBStreamBatchInfo"]["batchSize"] == 5
    assert mapping.batches == [5] and mapping.sent_to_failure == 1


def test_latest_skips_what_was_written_before(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    table = dynamodb_table("events", stream=True)
    table.client.put_item(TableName="events", Item={"pk": {"S": "before"}})
    seen: list[str] = []
    mapping = aws.dynamodb_stream_handler("events", lambda e: seen.extend(pk(r) for r in e["Records"]),
                                          starting_position="LATEST")
    table.client.put_item(TableName="events", Item={"pk": {"S": "after"}})
    mapping.wait_caught_up()
    assert seen == ["after"]


def test_bad_mappings_are_clear_errors(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    dynamodb_table("plain")
    dynamodb_table("events", stream=True)
    with pytest.raises(HarnessError, match="table 'missing' does not exist in us-east-1"):
        aws.dynamodb_stream_handler("missing", print)
    with pytest.raises(HarnessError, match="has no stream"):
        aws.dynamodb_stream_handler("plain", print)
    with pytest.raises(HarnessError, match=r"batch_size must be 1\.\.10000"):
        aws.dynamodb_stream_handler("events", print, batch_size=0)
    with pytest.raises(HarnessError, match="on-failure queue 'nope' does not exist"):
        aws.dynamodb_stream_handler("events", print, on_failure="arn:aws:sqs:us-east-1:123456789012:nope")
