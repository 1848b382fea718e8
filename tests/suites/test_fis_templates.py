"""FIS template validation: malformed JSON, unknown keys and actions, cycles, bad durations, selection
modes, target types vs what actions need, stop conditions -- all reported before anything starts."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from faults.base import Fault
from faults.fis import ExperimentRunner, FisTemplateError, Registry, default_registry, load_template, register_action
from faults.fis_template import KNOWN_SPECS
from faults.iso8601 import DurationError, format_duration, parse_duration

ROLE = "arn:aws:iam::123456789012:role/fis"
CLUSTER = "arn:aws:rds:us-east-1:123456789012:cluster:orders"
SUBNET = "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-0abc"
ALARM = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:orders-errors"


class Nothing(Fault):
    kind = "nothing"

    def _inject(self) -> None:
        pass

    def _heal(self) -> None:
        pass


def nothing(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> Fault:
    return Nothing(name=ctx.action_name)


@pytest.fixture
def reg() -> Registry:
    r = default_registry.copy()
    for action_id in ("aws:rds:failover-db-cluster", "aws:network:disrupt-connectivity"):
        r.register(action_id, nothing)
    return r


def template() -> dict[str, Any]:
    return {
        "description": "cut the app subnet, then fail the cluster over",
        "roleArn": ROLE,
        "stopConditions": [{"source": "none"}],
        "targets": {
            "app-subnets": {"resourceType": "aws:ec2:subnet", "resourceArns": [SUBNET], "selectionMode": "ALL"},
            "orders": {"resourceType": "aws:rds:cluster", "resourceArns": [CLUSTER], "selectionMode": "COUNT(1)"},
        },
        "actions": {
            "cut": {"actionId": "aws:network:disrupt-connectivity", "parameters": {"duration": "PT1M30S",
                                                                                   "scope": "availability-zone"},
                    "targets": {"Subnets": "app-subnets"}},
            "failover": {"actionId": "aws:rds:failover-db-cluster", "targets": {"Clusters": "orders"},
                         "startAfter": ["cut"]},
        },
        "tags": {"team": "db"},
    }


def problems(tpl: Any, reg: Registry, **kw: Any) -> str:
    with pytest.raises(FisTemplateError) as err:
        ExperimentRunner(tpl, registry=reg, **kw)
    return str(err.value)


def test_a_valid_template_parses_with_waves(reg: Registry, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template()))
    t = load_template(path, reg.specs())
    assert t.actions["cut"].duration == 90.0 and t.actions["failover"].duration is None
    assert t.levels() == [["cut"], ["failover"]]
    assert load_template(json.dumps(template())).description == t.description
    assert ExperimentRunner(str(path), registry=reg).template.tags == {"team": "db"}


def test_malformed_json_names_line_and_column(reg: Registry, tmp_path: Path) -> None:
    text = json.dumps(template(), indent=1).replace('"roleArn"', "roleArn", 1)
    assert "not valid JSON: Expecting property name enclosed in double quotes at line" in problems(text, reg)
    path = tmp_path / "broken.json"
    path.write_text("{\n  \"description\": \"x\",\n}")
    text = problems(path, reg)
    assert f"FIS template {path} is invalid" in text and "line 3 column 1" in text
    assert "cannot read it" in problems(tmp_path / "missing.json", reg)
    assert "the template must be a JSON object, got list" in problems("[1]", reg)


def test_unsupported_action_lists_the_supported_ones(reg: Registry) -> None:
    tpl = template()
    tpl["actions"]["stop"] = {"actionId": "aws:ec2:stop-instances", "targets": {}}
    text = problems(tpl, reg)
    assert ("actions.stop: action 'aws:ec2:stop-instances' is not supported here; supported: aws:fis:wait, "
            "aws:network:disrupt-connectivity, aws:rds:failover-db-cluster") in text


def test_cycles_unknown_and_self_references(reg: Registry) -> None:
    tpl = template()
    tpl["actions"]["cut"]["startAfter"] = ["failover"]
    assert "startAfter forms a cycle: cut -> failover -> cut" in problems(tpl, reg)
    tpl = template()
    tpl["actions"]["failover"]["startAfter"] = ["cutt", "failover"]
    text = problems(tpl, reg)
    assert "actions.failover.startAfter: unknown action 'cutt'; actions: cut, failover" in text
    assert "an action cannot start after itself" in text


@pytest.mark.parametrize("bad", ["5m", "PT", "P5M", "pt5m", "PT-5S", "300"])
def test_bad_durations(reg: Registry, bad: str) -> None:
    tpl = template()
    tpl["actions"]["cut"]["parameters"]["duration"] = bad
    assert f"actions.cut.parameters.duration: {bad!r} is not an ISO-8601 duration" in problems(tpl, reg)


def test_iso8601_durations() -> None:
    assert [parse_duration(t) for t in ("PT5M", "PT30S", "PT1M30S", "PT0.5S", "P1D", "PT1H")] == [
        300, 30, 90, 0.5, 86400, 3600]
    assert [format_duration(s) for s in (300, 90, 0.5, 0, 3600)] == ["PT5M", "PT1M30S", "PT0.5S", "PT0S", "PT1H"]
    with pytest.raises(DurationError, match="months"):
        parse_duration("P5M")
    with pytest.raises(DurationError, match=r"write seconds as PT300S"):
        parse_duration("300")


def test_unknown_keys_get_suggestions(reg: Registry) -> None:
    tpl = template()
    tpl["actions"]["failover"]["startafter"] = tpl["actions"]["failover"].pop("startAfter")
    tpl["targets"]["orders"]["resourceArn"] = [CLUSTER]
    tpl["extra"] = 1
    text = problems(tpl, reg)
    assert "actions.failover: unknown key 'startafter' (did you mean 'startAfter'?)" in text
    assert "targets.orders: unknown key 'resourceArn' (did you mean 'resourceArns'?)" in text
    assert "template: unknown key 'extra'" in text


def test_required_keys_and_action_ids(reg: Registry) -> None:
    tpl = template()
    del tpl["roleArn"], tpl["stopConditions"]
    del tpl["actions"]["failover"]["actionId"]
    text = problems(tpl, reg)
    assert "missing required key 'roleArn' (any role ARN will do against the emulator)" in text
    assert "missing required key 'stopConditions'" in text
    assert "actions.failover: missing actionId" in text


@pytest.mark.parametrize(("mode", "ok"), [("ALL", True), ("COUNT(2)", True), ("PERCENT(50)", True),
                                          ("COUNT(0)", False), ("PERCENT(101)", False), ("SOME", False),
                                          ("count(1)", False)])
def test_selection_modes(reg: Registry, mode: str, ok: bool) -> None:
    tpl = template()
    tpl["targets"]["app-subnets"]["selectionMode"] = mode
    tpl["targets"]["app-subnets"]["resourceArns"] = [SUBNET, SUBNET + "2"]
    if ok:
        ExperimentRunner(tpl, registry=reg)
    else:
        assert "targets.app-subnets: selectionMode must be ALL, COUNT(n)" in problems(tpl, reg)


def test_target_types_and_keys_must_match_the_action(reg: Registry) -> None:
    tpl = template()
    tpl["actions"]["failover"]["targets"] = {"Clusters": "app-subnets"}
    assert ("actions.failover.targets.Clusters: target 'app-subnets' is aws:ec2:subnet, but "
            "aws:rds:failover-db-cluster needs aws:rds:cluster") in problems(tpl, reg)
    tpl = template()
    tpl["actions"]["failover"]["targets"] = {"DBInstances": "orders"}
    text = problems(tpl, reg)
    assert "aws:rds:failover-db-cluster needs targets.Clusters (aws:rds:cluster)" in text
    assert "takes no target 'DBInstances'; it takes Clusters" in text
    tpl = template()
    tpl["actions"]["failover"]["targets"] = {"Clusters": "nowhere"}
    assert "actions.failover.targets.Clusters: unknown target 'nowhere'; targets: app-subnets, orders" in problems(
        tpl, reg)


def test_parameters_are_checked_against_the_action(reg: Registry) -> None:
    tpl = template()
    tpl["actions"]["cut"]["parameters"] = {"scope": "everything", "speed": "fast"}
    text = problems(tpl, reg)
    assert "aws:network:disrupt-connectivity needs parameters.duration" in text
    assert "parameters.scope: must be one of all, availability-zone, dynamodb, prefix-list, s3, vpc" in text
    assert "takes no parameter 'speed'" in text
    tpl = template()
    tpl["actions"]["cut"]["parameters"]["duration"] = 90
    assert "must be an object of string values" in problems(tpl, reg)


def test_targets_need_arns_or_tags_not_both(reg: Registry) -> None:
    tpl = template()
    tpl["targets"]["orders"]["resourceTags"] = {"env": "drill"}
    assert "give resourceArns or resourceTags, not both" in problems(tpl, reg)
    tpl = template()
    del tpl["targets"]["orders"]["resourceArns"]
    assert "name the resources with resourceArns or resourceTags" in problems(tpl, reg)
    tpl = template()
    tpl["targets"]["orders"] = {"resourceType": "aws:rds:cluster", "resourceTags": {"env": "drill"},
                                "selectionMode": "ALL"}
    assert "selects resources by tags / filters / parameters; pass resolver=" in problems(tpl, reg)
    assert "no resources matched (aws:rds:cluster)" in problems(tpl, reg, resolver=lambda t: [])


def test_stop_conditions(reg: Registry) -> None:
    tpl = template()
    tpl["stopConditions"] = [{"source": "aws:cloudwatch:alarm", "value": ALARM}]
    assert "no alarm_state callable was given" in problems(tpl, reg)
    ExperimentRunner(tpl, registry=reg, alarm_state=lambda arn: "OK")
    tpl["stopConditions"] = [{"source": "aws:cloudwatch:alarm", "value": "orders-errors"},
                             {"source": "none", "value": ALARM}, {"source": "sns"}]
    text = problems(tpl, reg)
    assert "stopConditions[0].value: must be a CloudWatch alarm ARN" in text
    assert "stopConditions[1]: source none takes no value" in text
    assert "stopConditions[2].source: must be one of none, aws:cloudwatch:alarm" in text


def test_every_problem_is_reported_at_once(reg: Registry) -> None:
    tpl = copy.deepcopy(template())
    tpl["actions"]["cut"]["parameters"]["duration"] = "soon"
    tpl["actions"]["failover"]["actionId"] = "aws:nope"
    tpl["targets"]["orders"]["selectionMode"] = "ANY"
    with pytest.raises(FisTemplateError) as err:
        ExperimentRunner(tpl, registry=reg)
    assert len(err.value.problems) == 3 and "(3 problem(s))" in str(err.value)


def test_registry_rules() -> None:
    r = Registry()
    r.register("dbdrill:custom", nothing)
    with pytest.raises(Exception, match="already registered"):
        r.register("dbdrill:custom", nothing)
    r.register("dbdrill:custom", nothing, replace=True)
    with pytest.raises(Exception, match="must be callable"):
        r.register("x", "nope")  # type: ignore[arg-type]
    assert r.specs()["dbdrill:custom"].open
    assert set(KNOWN_SPECS) >= {"aws:rds:reboot-db-instances", "aws:dynamodb:global-table-pause-replication",
                                "aws:network:route-table-disrupt-cross-region-connectivity",
                                "aws:fis:inject-api-throttle-error", "aws:fis:inject-api-unavailable-error"}
    assert "aws:fis:wait" in default_registry.supported()
    register_action("dbdrill:test-global", nothing)
    try:
        assert "dbdrill:test-global" in default_registry.supported()
    finally:
        default_registry.unregister("dbdrill:test-global")
