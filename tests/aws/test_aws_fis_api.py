"""The emulated FIS API runs experiments: StartExperiment through boto3 runs the template's actions against the
emulator (API throttling seen by a client), GetExperiment reports the real state of the experiment and each
action, StopExperiment heals at once, CloudWatch alarm stop conditions stop it, targets are found by tags, and a
template dbdrill cannot run is refused with a ValidationException."""
from __future__ import annotations

from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness.aws.endpoint import AwsEndpoint
from harness.wait import wait_until

ROLE = "arn:aws:iam::123456789012:role/app"
NO_RETRY = Config(retries={"total_max_attempts": 1})


def template(actions: dict[str, Any], targets: dict[str, Any] | None = None,
             stop: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"clientToken": "t", "description": "test", "roleArn": ROLE, "tags": {"team": "db"},
            "stopConditions": stop or [{"source": "none"}],
            "targets": targets if targets is not None else {
                "app": {"resourceType": "aws:iam:role", "resourceArns": [ROLE], "selectionMode": "ALL"}},
            "actions": actions}


def throttle(duration: str, after: list[str] | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"actionId": "aws:fis:inject-api-throttle-error", "targets": {"Roles": "app"},
                              "parameters": {"service": "dynamodb", "operations": "PutItem", "percentage": "100",
                                             "duration": duration}}
    if after:
        action["startAfter"] = after
    return action


def status(fis: Any, experiment_id: str) -> str:
    return str(fis.get_experiment(id=experiment_id)["experiment"]["state"]["status"])


def test_start_experiment_runs_the_actions_in_order(aws: AwsEndpoint, kv_table: Any) -> None:
    fis = aws.client("fis")
    client = aws.client("dynamodb", config=NO_RETRY)
    kv_table(client, "t")
    tpl = fis.create_experiment_template(**template({
        "wait": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT30S"}},  # 0.3 s at the fast scale
        "throttle": throttle("PT2M", after=["wait"])}))["experimentTemplate"]
    started = fis.start_experiment(experimentTemplateId=tpl["id"])["experiment"]
    assert started["state"]["status"] == "initiating"
    wait_until(lambda: aws.fault_rules(), 10, what="the throttle action to start after the wait")
    experiment = fis.get_experiment(id=started["id"])["experiment"]
    assert experiment["state"]["status"] == "running"
    assert experiment["actions"]["wait"]["state"]["status"] == "completed"
    assert experiment["actions"]["throttle"]["state"]["status"] == "running"
    with pytest.raises(ClientError) as err:
        client.put_item(TableName="t", Item={"pk": {"S": "x"}})
    assert err.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    wait_until(lambda: status(fis, started["id"]) == "completed", 10, what="the experiment to complete")
    assert aws.fault_rules() == []
    client.put_item(TableName="t", Item={"pk": {"S": "x"}})
    done = fis.get_experiment(id=started["id"])["experiment"]
    assert done["actions"]["throttle"]["startTime"] >= done["actions"]["wait"]["endTime"]
    assert "endTime" in done


def test_stop_experiment_heals_at_once(aws: AwsEndpoint, kv_table: Any) -> None:
    fis = aws.client("fis")
    client = aws.client("dynamodb", config=NO_RETRY)
    kv_table(client, "t")
    tpl = fis.create_experiment_template(**template({"throttle": throttle("PT1H")}))["experimentTemplate"]
    experiment_id = fis.start_experiment(experimentTemplateId=tpl["id"])["experiment"]["id"]
    wait_until(lambda: aws.fault_rules(), 10, what="the throttle action")
    fis.stop_experiment(id=experiment_id)
    wait_until(lambda: status(fis, experiment_id) == "stopped", 10, what="the experiment to stop")
    assert aws.fault_rules() == []
    assert fis.get_experiment(id=experiment_id)["experiment"]["actions"]["throttle"]["state"]["status"] == "stopped"


def test_an_alarm_stop_condition_stops_it(aws: AwsEndpoint, kv_table: Any) -> None:
    fis, cloudwatch = aws.client("fis"), aws.client("cloudwatch")
    kv_table(aws.client("dynamodb"), "t")
    cloudwatch.put_metric_alarm(AlarmName="errors", MetricName="Errors", Namespace="App", Statistic="Sum",
                                Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
    alarm = cloudwatch.describe_alarms(AlarmNames=["errors"])["MetricAlarms"][0]["AlarmArn"]
    tpl = fis.create_experiment_template(**template(
        {"throttle": throttle("PT1H")}, stop=[{"source": "aws:cloudwatch:alarm", "value": alarm}]))
    experiment_id = fis.start_experiment(experimentTemplateId=tpl["experimentTemplate"]["id"])["experiment"]["id"]
    wait_until(lambda: aws.fault_rules(), 10, what="the throttle action")
    cloudwatch.set_alarm_state(AlarmName="errors", StateValue="ALARM", StateReason="test")
    wait_until(lambda: status(fis, experiment_id) == "stopped", 10, what="the stop condition")
    state = fis.get_experiment(id=experiment_id)["experiment"]["state"]
    assert "ALARM" in state["reason"]
    assert aws.fault_rules() == []


def test_targets_by_tags(aws: AwsEndpoint, dynamodb_table: Any) -> None:
    fis = aws.client("fis")
    table = dynamodb_table("carts", region="us-east-1")
    table.client.update_table(TableName="carts", ReplicaUpdates=[{"Create": {"RegionName": "eu-west-1"}}])
    table.client.tag_resource(ResourceArn=table.arn, Tags=[{"Key": "drill", "Value": "yes"}])
    tpl = fis.create_experiment_template(**template(
        {"pause": {"actionId": "aws:dynamodb:global-table-pause-replication", "targets": {"Tables": "t"},
                   "parameters": {"duration": "PT1H"}}},
        targets={"t": {"resourceType": "aws:dynamodb:global-table", "resourceTags": {"drill": "yes"},
                       "selectionMode": "ALL"}}))["experimentTemplate"]
    experiment_id = fis.start_experiment(experimentTemplateId=tpl["id"])["experiment"]["id"]
    tables = aws.dynamodb.global_tables
    group = tables.groups()[0]
    wait_until(lambda: tables._paused(group, "us-east-1"), 10, what="replication to pause")
    fis.stop_experiment(id=experiment_id)
    wait_until(lambda: status(fis, experiment_id) == "stopped", 10, what="the experiment to stop")
    assert not tables._paused(group, "us-east-1")


@pytest.mark.parametrize(("actions", "targets", "message"), [
    ({"x": {"actionId": "aws:ecs:stop-task", "parameters": {}}}, {}, "aws:rds:failover-db-cluster"),
    ({"p": {"actionId": "aws:dynamodb:global-table-pause-replication", "targets": {"Tables": "t"},
            "parameters": {"duration": "PT1M"}}},
     {"t": {"resourceType": "aws:dynamodb:global-table", "resourceTags": {"nothing": "here"},
            "selectionMode": "ALL"}}, "no resources matched"),
])
def test_what_dbdrill_cannot_run_is_refused(aws: AwsEndpoint, actions: dict[str, Any], targets: dict[str, Any],
                                            message: str) -> None:
    fis = aws.client("fis")
    tpl = fis.create_experiment_template(**template(actions, targets))["experimentTemplate"]
    with pytest.raises(ClientError) as err:
        fis.start_experiment(experimentTemplateId=tpl["id"])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert message in err.value.response["Error"]["Message"]
    assert fis.list_experiments()["experiments"] == []
