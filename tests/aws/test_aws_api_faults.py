"""API faults over real HTTP: boto3 parses each service's error format and retries as it would on AWS;
rules select by service, operation, region and probability; bad faults fail before anything changes."""
from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from faults.api import api_error, api_latency, internal_error, throttle, unavailable
from faults.base import FaultError
from harness.aws.endpoint import AwsEndpoint


def _code(exc: BaseException) -> str:
    return exc.response["Error"]["Code"] if isinstance(exc, ClientError) else ""


def test_tenacity_writer_survives_injected_throttling(aws: AwsEndpoint, kv_table: Any, no_retry: Config) -> None:
    client = aws.client("dynamodb", config=no_retry)
    kv_table(client, "orders")
    throttles = []
    retrying = Retrying(retry=retry_if_exception(lambda e: _code(e) == "ProvisionedThroughputExceededException"),
                        wait=wait_fixed(0.001), stop=stop_after_attempt(60), reraise=True,
                        before_sleep=lambda state: throttles.append(state.attempt_number))
    with throttle("dynamodb", "PutItem", probability=0.5, seed=7) as fault:
        for i in range(40):
            retrying(client.put_item, TableName="orders", Item={"pk": {"S": f"o{i}"}})
    assert len(throttles) == fault.hits > 5
    assert client.scan(TableName="orders", Select="COUNT")["Count"] == 40


@pytest.mark.parametrize(("mode", "make", "code", "status", "attempts"), [
    ("standard", lambda: throttle("dynamodb", "PutItem"), "ProvisionedThroughputExceededException", 400, 2),
    ("legacy", lambda: throttle("dynamodb", "PutItem"), "ProvisionedThroughputExceededException", 400, 3),
    ("legacy", lambda: unavailable("dynamodb", "PutItem"), "ServiceUnavailable", 503, 3),
    ("legacy", lambda: internal_error("dynamodb", "PutItem"), "InternalServerError", 500, 3),
    ("legacy", lambda: api_error("dynamodb", "PutItem", error="ValidationException"), "ValidationException", 400,
     1),
])
def test_boto3_retry_modes_treat_injected_errors_as_aws(aws: AwsEndpoint, kv_table: Any, mode: str, make: Any,
                                                       code: str, status: int, attempts: int) -> None:
    """Throttling and 5xx are retried up to the attempt limit (3 here, 2 in slow standard mode); a
    validation error is not retried at all."""
    limit = 2 if mode == "standard" else 3
    client = aws.client("dynamodb", config=Config(retries={"mode": mode, "total_max_attempts": limit}))
    kv_table(client, "t")
    with make() as fault, pytest.raises(ClientError) as err:
        client.put_item(TableName="t", Item={"pk": {"S": "x"}})
    assert _code(err.value) == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert fault.hits == attempts
    client.put_item(TableName="t", Item={"pk": {"S": "x"}})  # healed


def test_each_protocol_carries_the_code(aws: AwsEndpoint, no_retry: Config) -> None:
    cases = [
        ("rds", lambda c: c.describe_db_instances(), "Throttling"),           # query XML
        ("sns", lambda c: c.list_topics(), "Throttling"),                     # query XML
        ("sqs", lambda c: c.list_queues(), "RequestThrottled"),               # JSON, query-compatible
        ("route53", lambda c: c.list_hosted_zones(), "Throttling"),           # REST XML
        ("s3", lambda c: c.list_buckets(), "SlowDown"),                       # REST XML, S3 style
        ("lambda", lambda c: c.list_functions(), "ThrottlingException"),      # REST JSON
        ("dynamodbstreams", lambda c: c.list_streams(), "ThrottlingException"),
    ]
    for service, call, code in cases:
        client = aws.client(service, config=no_retry)
        with throttle(service):
            with pytest.raises(ClientError) as err:
                call(client)
            assert _code(err.value) == code, service
        call(client)


def test_rules_select_operation_and_region(aws: AwsEndpoint, kv_table: Any, no_retry: Config) -> None:
    east = aws.client("dynamodb", region="us-east-1", config=no_retry)
    west = aws.client("dynamodb", region="eu-west-1", config=no_retry)
    kv_table(east, "t")
    kv_table(west, "t")
    with throttle("dynamodb", operations=["put_item"], regions="eu-west-1"):
        east.put_item(TableName="t", Item={"pk": {"S": "a"}})
        west.get_item(TableName="t", Key={"pk": {"S": "a"}})
        with pytest.raises(ClientError):
            west.put_item(TableName="t", Item={"pk": {"S": "a"}})
    r53 = aws.client("route53", config=no_retry)  # REST: the operation comes from method + path
    with throttle("route53", "CreateHostedZone"):
        r53.list_hosted_zones()
        with pytest.raises(ClientError):
            r53.create_hosted_zone(Name="example.org", CallerReference="r1")


def test_latency_fault_delays_only_matching_calls(aws: AwsEndpoint, kv_table: Any) -> None:
    client = aws.client("dynamodb")
    kv_table(client, "t")
    with api_latency("dynamodb", 150, "GetItem"):
        start = time.perf_counter()
        client.get_item(TableName="t", Key={"pk": {"S": "a"}})
        slow = time.perf_counter() - start
        start = time.perf_counter()
        client.put_item(TableName="t", Item={"pk": {"S": "a"}})
        fast = time.perf_counter() - start
    assert 0.145 <= slow < 1.0
    assert fast < 0.14


def test_probability_is_honoured(aws: AwsEndpoint, no_retry: Config) -> None:
    client = aws.client("dynamodb", config=no_retry)
    failures = 0
    with api_error("dynamodb", "ListTables", error="InternalServerError", probability=0.3) as fault:
        for _ in range(200):
            try:
                client.list_tables()
            except ClientError:
                failures += 1
    assert failures == fault.hits
    assert 35 <= failures <= 85  # binomial(200, 0.3): mean 60, sd 6.5


def test_bad_faults_fail_before_anything_changes(aws: AwsEndpoint) -> None:
    with pytest.raises(FaultError, match=r"unknown AWS service 'dynamo'.*Did you mean dynamodb"):
        throttle("dynamo")
    with pytest.raises(FaultError, match=r"dynamodb has no operation 'PutItems'.*Did you mean PutItem"):
        throttle("dynamodb", "PutItems")
    with pytest.raises(FaultError, match=r"probability must be within \[0, 1\], got 1.5"):
        api_error("dynamodb", error="ThrottlingException", probability=1.5)
    with pytest.raises(FaultError, match=r"unknown region.*eu-west-9.*us-east-1"):
        throttle("dynamodb", regions=["eu-west-9"])
    with pytest.raises(FaultError, match="needs an error code"):
        api_error("dynamodb", error="")
    assert aws.fault_rules() == []
