"""FIS experiment templates against the emulated endpoint: inject-api-*-error and
global-table-pause-replication actions, healed when their duration ends."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from faults import api, dynamodb
from faults.fis import Registry, default_registry, run_experiment
from harness.aws.endpoint import AwsEndpoint
from harness.wait import wait_until

ROLE = "arn:aws:iam::123456789012:role/app"


@pytest.fixture
def registry() -> Registry:
    reg = default_registry.copy()
    api.register_fis_actions(reg)
    dynamodb.register_fis_actions(reg)
    return reg


def _run_in_background(template: dict[str, Any], registry: Registry, aws: AwsEndpoint) -> threading.Thread:
    thread = threading.Thread(target=run_experiment, args=(template,),
                              kwargs={"registry": registry, "time_scale": 0.05, "extra": {"endpoint": aws}})
    thread.start()
    return thread


def test_inject_api_throttle_error_template(aws: AwsEndpoint, registry: Registry, kv_table: Any) -> None:
    client = aws.client("dynamodb", config=Config(retries={"total_max_attempts": 1}))
    kv_table(client, "t")
    template = {"description": "throttle writes", "roleArn": ROLE, "stopConditions": [{"source": "none"}],
                "targets": {"app": {"resourceType": "aws:iam:role", "resourceArns": [ROLE], "selectionMode": "ALL"}},
                "actions": {"throttle": {"actionId": "aws:fis:inject-api-throttle-error", "targets": {"Roles": "app"},
                                         "parameters": {"service": "dynamodb", "operations": "PutItem",
                                                        "percentage": "100", "duration": "PT20S"}}}}
    thread = _run_in_background(template, registry, aws)
    wait_until(lambda: aws.fault_rules(), 5, what="the FIS action to start")
    with pytest.raises(ClientError) as err:
        client.put_item(TableName="t", Item={"pk": {"S": "x"}})
    assert err.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    client.get_item(TableName="t", Key={"pk": {"S": "x"}})  # other operations untouched
    thread.join(10)
    assert aws.fault_rules() == []
    client.put_item(TableName="t", Item={"pk": {"S": "x"}})


def test_global_table_pause_replication_template(aws: AwsEndpoint, registry: Registry, dynamodb_table: Any) -> None:
    table = dynamodb_table("carts", region="us-east-1")
    table.client.update_table(TableName="carts", ReplicaUpdates=[{"Create": {"RegionName": "eu-west-1"}}])
    west_arn = table.arn.replace("us-east-1", "eu-west-1")
    template = {"description": "pause", "roleArn": ROLE, "stopConditions": [{"source": "none"}],
                "targets": {"t": {"resourceType": "aws:dynamodb:global-table", "resourceArns": [west_arn],
                                  "selectionMode": "ALL"}},
                "actions": {"pause": {"actionId": "aws:dynamodb:global-table-pause-replication",
                                      "targets": {"Tables": "t"}, "parameters": {"duration": "PT20S"}}}}
    thread = _run_in_background(template, registry, aws)
    tables = aws.dynamodb.global_tables
    wait_until(lambda: tables._pauses, 5, what="the pause to start")
    table.client.put_item(TableName="carts", Item={"pk": {"S": "during"}})
    tables.replicate()
    assert not tables.caught_up()
    thread.join(10)
    aws.wait_replicated()
    west = aws.client("dynamodb", region="eu-west-1")
    assert "Item" in west.get_item(TableName="carts", Key={"pk": {"S": "during"}})
