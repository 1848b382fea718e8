"""The emulated AWS endpoint over real HTTP with boto3: services, regions, keep-alive, clear errors, env."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness.aws.endpoint import AwsEndpoint
from harness.aws.guard import RealAwsBlocked
from harness.errors import HarnessError


def test_every_attribute_type_round_trips(aws: AwsEndpoint, kv_table: Any) -> None:
    ddb = aws.resource("dynamodb")
    kv_table(aws.client("dynamodb"), "types")
    item = {
        "pk": "k1", "s": "héllo", "n": Decimal("-12.50"), "b": b"\x00\x01binary", "t": True, "nul": None,
        "ss": {"a", "b"}, "ns": {Decimal(1), Decimal("2.5")}, "bs": {b"x", b"y"},
        "l": [1, "two", {"three": [Decimal(3)]}, b"\xff"], "m": {"inner": {"deep": "v", "flag": False}},
    }
    ddb.Table("types").put_item(Item=item)
    got = ddb.Table("types").get_item(Key={"pk": "k1"}, ConsistentRead=True)["Item"]
    assert got["b"].value == item["b"] and got["l"][3].value == b"\xff"
    assert {bytes(x.value) for x in got["bs"]} == {b"x", b"y"}
    for key in ("s", "n", "t", "nul", "ss", "ns", "m"):
        assert got[key] == item[key], key
    raw = aws.client("dynamodb").get_item(TableName="types", Key={"pk": {"S": "k1"}})["Item"]
    assert raw["b"] == {"B": item["b"]}
    assert raw["l"]["L"][3] == {"B": b"\xff"} and raw["nul"] == {"NULL": True}


def test_other_services_speak_their_protocols(aws: AwsEndpoint) -> None:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="q1")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "hello"
    sns = aws.client("sns")
    assert sns.create_topic(Name="t1")["TopicArn"].endswith(":t1")
    r53 = aws.client("route53")
    zone = r53.create_hosted_zone(Name="example.com", CallerReference="x")["HostedZone"]["Id"]
    assert any(z["Id"] == zone for z in r53.list_hosted_zones()["HostedZones"])
    with pytest.raises(ClientError) as err:
        aws.client("rds").describe_db_instances(DBInstanceIdentifier="nope")
    assert err.value.response["Error"]["Code"] == "DBInstanceNotFound"


def test_regions_are_separate(aws: AwsEndpoint, kv_table: Any) -> None:
    kv_table(aws.client("dynamodb", region="us-east-1"), "only-east")
    assert "only-east" in aws.client("dynamodb", region="us-east-1").list_tables()["TableNames"]
    assert "only-east" not in aws.client("dynamodb", region="eu-west-1").list_tables()["TableNames"]
    with aws.lock:
        assert "only-east" in aws.backend("dynamodb", "us-east-1").tables
        assert "only-east" not in aws.backend("dynamodb", "eu-west-1").tables


def test_connections_are_kept_alive(aws: AwsEndpoint) -> None:
    client = aws.client("dynamodb")
    client.list_tables()
    assert aws.server is not None
    before = aws.server.accepted
    for _ in range(20):
        client.list_tables()
    assert aws.server.accepted - before <= 1


def test_unimplemented_action_is_a_clear_error_not_retried(aws: AwsEndpoint) -> None:
    client = aws.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 5}))
    assert aws.app is not None
    before = aws.app.requests
    with pytest.raises(ClientError) as err:
        client.describe_contributor_insights(TableName="t")
    assert err.value.response["Error"]["Code"] == "NotImplemented"
    assert "DescribeContributorInsights" in err.value.response["Error"]["Message"]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert aws.app.requests - before == 1  # not retried


def test_unknown_region_and_backend_are_clear_errors(aws: AwsEndpoint) -> None:
    with pytest.raises(HarnessError, match=r"unknown region 'us-east-7'.*Did you mean us-east-1"):
        aws.client("dynamodb", region="us-east-7")
    with pytest.raises(HarnessError, match="moto has no backend 'nosuchservice'"):
        aws.backend("nosuchservice")


def test_plain_boto3_in_app_code_hits_the_emulator(aws_env: dict[str, str], aws: AwsEndpoint,
                                                   kv_table: Any) -> None:
    kv_table(boto3.client("dynamodb"), "from-app")
    kv_table(boto3.client("dynamodb", region_name="eu-west-1"), "from-app-eu")
    boto3.resource("dynamodb").Table("from-app").put_item(Item={"pk": "a", "v": 1})
    with aws.lock:
        assert "from-app" in aws.backend("dynamodb", aws.default_region).tables
        assert "from-app-eu" in aws.backend("dynamodb", "eu-west-1").tables
    assert aws.client("dynamodb").get_item(TableName="from-app", Key={"pk": {"S": "a"}})["Item"]["v"] == {"N": "1"}


def test_env_drops_profiles_and_per_service_endpoints(monkeypatch: pytest.MonkeyPatch, aws: AwsEndpoint,
                                                      request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("AWS_PROFILE", "production-admin")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://dynamodb.us-east-1.amazonaws.com")
    env = request.getfixturevalue("aws_env")
    import os

    assert "AWS_PROFILE" not in os.environ and "AWS_ENDPOINT_URL_DYNAMODB" not in os.environ
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.")
    assert env["AWS_ACCOUNT_ID_ENDPOINT_MODE"] == "disabled" and env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["AWS_CONFIG_FILE"] == os.devnull == env["AWS_SHARED_CREDENTIALS_FILE"]
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []


def test_real_aws_is_never_reached(aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    real = boto3.session.Session(aws_access_key_id="AKIAREALLOOKING", aws_secret_access_key="x",
                                 region_name="us-east-1")
    with pytest.raises(RealAwsBlocked, match=r"blocked a request to https://dynamodb\.us-east-1\.amazonaws\.com"):
        real.client("dynamodb", config=Config(retries={"max_attempts": 1})).list_tables()
    with pytest.raises(RealAwsBlocked, match="not a loopback address"):
        aws.client("dynamodb", endpoint_url="http://10.1.2.3:80")


def test_fast_attribute_value_paths_match_motos_generic_ones(aws: AwsEndpoint) -> None:
    """The hot-path parser/serializer short-cuts give exactly what moto's shape walkers give."""
    import json

    from moto.core.parse import JSONParser
    from moto.core.serialize import SERVICE_SPECIFIC_SERIALIZERS, JSONSerializer
    from moto.core.utils import get_service_model

    from harness.aws.motoapp import _json_parser_class

    item = {"pk": {"S": "k"}, "n": {"N": "-1.5e3"}, "b": {"B": "AAH/"}, "t": {"BOOL": False}, "z": {"NULL": True},
            "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]}, "bs": {"BS": ["eA==", "eQ=="]},
            "l": {"L": [{"N": "1"}, {"M": {"deep": {"B": "/w=="}}}]}, "m": {"M": {"s": {"S": "v"}}}}
    model = get_service_model("dynamodb")
    put = model.operation_model("PutItem")
    request = {"method": "POST", "values": {}, "headers": {}, "url_path": "/", "url_params": {},
               "body": json.dumps({"TableName": "t", "Item": item}).encode()}
    assert _json_parser_class()(put, map_type=dict).parse(request) == JSONParser(put, map_type=dict).parse(request)
    get = model.operation_model("GetItem")
    parsed_item = JSONParser(put, map_type=dict).parse(request)["Item"]
    fast = SERVICE_SPECIFIC_SERIALIZERS["dynamodb"]["json"](operation_model=get).serialize({"Item": parsed_item})
    slow = JSONSerializer(operation_model=get).serialize({"Item": parsed_item})
    assert json.loads(fast["body"]) == json.loads(slow["body"])
