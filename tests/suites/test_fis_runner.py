"""FIS runner: the startAfter DAG with time-scaled durations, waits, stop conditions, failures, Ctrl-C,
target selection -- faults always healed and the experiment record telling what ran."""
from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from faults.base import Fault, Timeline, active_faults, recording
from faults.fis import (
    ActionContext,
    ExperimentRunner,
    FisTemplateError,
    Registry,
    cloudwatch_alarm_state,
    default_registry,
    run_experiment,
)
from harness.wait import wait_until

ROLE = "arn:aws:iam::123456789012:role/fis"
CLUSTER = "arn:aws:rds:us-east-1:123456789012:cluster:orders"
SUBNET = "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-"
ALARM = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:p99"


class Recorder(Fault):
    """A fault that only remembers what happened to it."""

    kind = "recorder"
    log: list[tuple[str, str]] = []

    def __init__(self, name: str, fail: bool = False) -> None:
        super().__init__(name=name)
        self.fail = fail
        self.on = threading.Event()

    def _inject(self) -> None:
        if self.fail:
            raise RuntimeError("injection refused")
        self.on.set()
        Recorder.log.append(("inject", self.name))

    def _heal(self) -> None:
        self.on.clear()
        Recorder.log.append(("heal", self.name))


@pytest.fixture
def reg() -> Registry:
    Recorder.log = []
    made: dict[str, Recorder] = {}
    seen: list[ActionContext] = []

    def handler(params: dict[str, str], targets: dict[str, list[str]], ctx: ActionContext) -> Fault:
        seen.append(ctx)
        made[ctx.action_name] = Recorder(ctx.action_name, fail=params.get("fail") == "yes")
        made[ctx.action_name].targets = targets  # type: ignore[attr-defined]
        return made[ctx.action_name]

    r = default_registry.copy()
    for action_id in ("aws:network:disrupt-connectivity", "aws:rds:failover-db-cluster", "dbdrill:test-fault"):
        r.register(action_id, handler)
    r.made = made  # type: ignore[attr-defined]
    r.seen = seen  # type: ignore[attr-defined]
    return r


def tpl(actions: dict[str, Any], stop: list[dict[str, Any]] | None = None,
        targets: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": "test", "roleArn": ROLE, "stopConditions": stop or [{"source": "none"}],
            "targets": targets if targets is not None else {
                "subnets": {"resourceType": "aws:ec2:subnet", "resourceArns": [SUBNET + "a"], "selectionMode": "ALL"},
                "cluster": {"resourceType": "aws:rds:cluster", "resourceArns": [CLUSTER], "selectionMode": "ALL"}},
            "actions": actions}


CUT = {"actionId": "aws:network:disrupt-connectivity", "parameters": {"duration": "PT20S"},
       "targets": {"Subnets": "subnets"}}
FAILOVER = {"actionId": "aws:rds:failover-db-cluster", "targets": {"Clusters": "cluster"}}


def test_start_after_runs_in_order_with_time_scaled_windows(reg: Registry) -> None:
    template = tpl({
        "then": {"actionId": "dbdrill:test-fault", "parameters": {"duration": "PT10S"}, "startAfter": ["first"]},
        "first": CUT,
    })
    with recording(Timeline()) as tl:
        rec = run_experiment(template, registry=reg, time_scale=0.01)
    assert rec.state == "completed" and rec.reason == "all actions completed"
    first, then = tl.events
    assert (first.name, then.name) == ("first", "then")
    assert first.duration == pytest.approx(0.2, abs=0.15) and then.duration == pytest.approx(0.1, abs=0.15)
    assert first.end_mono is not None and first.end_mono <= then.start_mono
    assert then.start_mono - first.end_mono < 0.1  # started when its predecessor completed, not a poll later
    a = rec.actions
    assert (a["first"].duration, a["first"].scaled_duration, a["then"].scaled_duration) == (20.0, 0.2, 0.1)
    assert a["first"].end_mono is not None and a["then"].start_mono is not None
    assert a["first"].end_mono <= a["then"].start_mono
    assert Recorder.log == [("inject", "first"), ("heal", "first"), ("inject", "then"), ("heal", "then")]
    json.dumps(rec.to_dict())


def test_independent_actions_run_together_and_wait_spaces_them(reg: Registry) -> None:
    template = tpl({
        "a": CUT, "b": {**FAILOVER},
        "pause": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT10S"}, "startAfter": ["a", "b"]},
        "c": {"actionId": "dbdrill:test-fault", "startAfter": ["pause"]},
    })
    with recording(Timeline()) as tl:
        rec = run_experiment(template, registry=reg, time_scale=0.01)
    ev = {e.name: e for e in tl.events}
    assert abs(ev["a"].start_mono - ev["b"].start_mono) < 0.1
    assert ev["b"].duration is not None and ev["b"].duration < 0.1   # failover is instantaneous
    assert ev["pause"].kind == "wait" and ev["pause"].start_mono >= (ev["a"].end_mono or 0)
    assert ev["c"].start_mono - ev["a"].start_mono == pytest.approx(0.3, abs=0.15)
    assert [a.state for a in rec.actions.values()] == ["completed"] * 4


def test_handlers_get_targets_parameters_and_scaled_duration(reg: Registry) -> None:
    targets = {"subnets": {"resourceType": "aws:ec2:subnet", "resourceArns": [SUBNET + x for x in "abcd"],
                           "selectionMode": "PERCENT(50)"},
               "cluster": {"resourceType": "aws:rds:cluster", "resourceTags": {"env": "drill"},
                           "selectionMode": "COUNT(1)"}}
    template = tpl({"cut": CUT, "fo": FAILOVER}, targets=targets)
    runs = [ExperimentRunner(template, registry=reg, time_scale=0.001, seed=4, extra={"stack": "S"},
                             resolver=lambda t: [CLUSTER, CLUSTER + "-2", CLUSTER + "-3"]) for _ in range(2)]
    assert runs[0].resolved == runs[1].resolved
    assert len(runs[0].resolved["subnets"]) == 2 and len(runs[0].resolved["cluster"]) == 1
    rec = runs[0].run()
    made = reg.made  # type: ignore[attr-defined]
    assert made["cut"].targets == {"Subnets": runs[0].resolved["subnets"]}
    ctx = {c.action_name: c for c in reg.seen}  # type: ignore[attr-defined]
    assert ctx["cut"].duration == pytest.approx(0.02) and ctx["fo"].duration is None
    assert ctx["cut"].extra == {"stack": "S"} and ctx["cut"].experiment_id == rec.id
    short = tpl({"fo": FAILOVER}, targets={"cluster": {**targets["cluster"], "selectionMode": "COUNT(5)"}})
    with pytest.raises(FisTemplateError, match="COUNT\\(5\\) but only 3 resource"):
        ExperimentRunner(short, registry=reg, resolver=lambda t: [CLUSTER, CLUSTER + "2", CLUSTER + "3"])
    skip = {**tpl({"fo": FAILOVER}, targets={"cluster": targets["cluster"]}),
            "experimentOptions": {"emptyTargetResolutionMode": "skip"}}
    assert ExperimentRunner(skip, registry=reg, resolver=lambda t: []).resolved == {"cluster": []}


def test_alarm_stops_the_experiment_heals_and_cancels_the_rest(reg: Registry) -> None:
    state = {"p99": "OK"}
    template = tpl({"cut": {**CUT, "parameters": {"duration": "PT1H"}},
                    "later": {**FAILOVER, "startAfter": ["cut"]}},
                   stop=[{"source": "aws:cloudwatch:alarm", "value": ALARM}])
    runner = ExperimentRunner(template, registry=reg, time_scale=1.0, poll_interval=0.01,
                              alarm_state=lambda arn: state["p99"] if arn == ALARM else "?")
    done = threading.Thread(target=runner.run)
    done.start()
    made = reg.made  # type: ignore[attr-defined]
    wait_until(lambda: "cut" in made and made["cut"].on.is_set(), 10, what="cut injected")
    state["p99"] = "ALARM"
    done.join(10)
    rec = runner.record
    assert rec.state == "stopped" and rec.reason == f"stop condition {ALARM} is in ALARM"
    assert rec.actions["cut"].state == "stopped" and rec.actions["later"].state == "cancelled"
    assert not made["cut"].on.is_set() and "later" not in made and active_faults() == []


def test_alarm_already_firing_starts_nothing(reg: Registry) -> None:
    template = tpl({"cut": CUT}, stop=[{"source": "aws:cloudwatch:alarm", "value": ALARM}])
    rec = run_experiment(template, registry=reg, alarm_state=lambda arn: "ALARM")
    assert rec.state == "stopped" and rec.actions["cut"].state == "cancelled" and Recorder.log == []
    broken = run_experiment(template, registry=reg, alarm_state=lambda arn: 1 / 0)
    assert broken.state == "failed" and "could not read stop condition" in broken.reason


def test_a_failing_action_fails_the_experiment_and_heals_the_others(reg: Registry) -> None:
    template = tpl({"cut": {**CUT, "parameters": {"duration": "PT1H"}},
                    "bad": {"actionId": "dbdrill:test-fault", "parameters": {"fail": "yes"}},
                    "after": {**FAILOVER, "startAfter": ["bad"]}})
    rec = run_experiment(template, registry=reg, time_scale=1.0)
    assert rec.state == "failed" and "action bad (dbdrill:test-fault) failed: injection refused" in rec.reason
    assert rec.actions["bad"].state == "failed" and rec.actions["bad"].error == "RuntimeError: injection refused"
    assert rec.actions["cut"].state == "stopped" and rec.actions["after"].state == "cancelled"
    assert not reg.made["cut"].on.is_set() and active_faults() == []  # type: ignore[attr-defined]


def test_keyboard_interrupt_heals_and_propagates(reg: Registry) -> None:
    made = reg.made  # type: ignore[attr-defined]

    def alarm(arn: str) -> str:
        if "cut" in made and made["cut"].on.is_set():
            raise KeyboardInterrupt
        return "OK"

    template = tpl({"cut": {**CUT, "parameters": {"duration": "PT1H"}}},
                   stop=[{"source": "aws:cloudwatch:alarm", "value": ALARM}])
    runner = ExperimentRunner(template, registry=reg, alarm_state=alarm, poll_interval=0.01)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert not made["cut"].on.is_set() and runner.record.state == "stopped"
    assert runner.record.reason.startswith("interrupted: KeyboardInterrupt")


def test_stop_from_another_thread_timeout_and_single_use(reg: Registry) -> None:
    runner = ExperimentRunner(tpl({"cut": {**CUT, "parameters": {"duration": "PT1H"}}}), registry=reg)
    t = threading.Thread(target=runner.run)
    t.start()
    made = reg.made  # type: ignore[attr-defined]
    wait_until(lambda: "cut" in made and made["cut"].on.is_set(), 10, what="cut injected")
    runner.stop("game day called off")
    t.join(10)
    assert runner.record.state == "stopped" and runner.record.reason == "game day called off"
    with pytest.raises(Exception, match="already ran"):
        runner.run()
    slow = run_experiment(tpl({"cut": {**CUT, "parameters": {"duration": "PT1H"}}}), registry=reg, timeout=0.2)
    assert slow.state == "failed" and slow.reason == "timed out after 0.2s" and active_faults() == []
    with pytest.raises(Exception, match="time_scale must be a positive number"):
        ExperimentRunner(tpl({"cut": CUT}), registry=reg, time_scale=0)


def test_cloudwatch_alarm_stop_condition_with_moto(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name="us-east-1")
        cw.put_metric_alarm(AlarmName="p99", MetricName="Latency", Namespace="drill", Statistic="Average",
                            Period=60, EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")
        arn = cw.describe_alarms(AlarmNames=["p99"])["MetricAlarms"][0]["AlarmArn"]
        assert arn == ALARM
        cw.set_alarm_state(AlarmName="p99", StateValue="OK", StateReason="drill starts")
        template = tpl({"cut": {**CUT, "parameters": {"duration": "PT1H"}}},
                       stop=[{"source": "aws:cloudwatch:alarm", "value": arn}])
        runner = ExperimentRunner(template, registry=reg, poll_interval=0.01,
                                  alarm_state=cloudwatch_alarm_state(lambda region: boto3.client(
                                      "cloudwatch", region_name=region)))
        t = threading.Thread(target=runner.run)
        t.start()
        made = reg.made  # type: ignore[attr-defined]
        wait_until(lambda: "cut" in made and made["cut"].on.is_set(), 10, what="cut injected")
        cw.set_alarm_state(AlarmName="p99", StateValue="ALARM", StateReason="p99 over 1 s")
        t.join(10)
        assert runner.record.state == "stopped" and runner.record.reason == f"stop condition {arn} is in ALARM"
        assert not made["cut"].on.is_set()
        missing = run_experiment(tpl({"cut": CUT}, stop=[{"source": "aws:cloudwatch:alarm", "value": arn + "x"}]),
                                 registry=reg, alarm_state=cloudwatch_alarm_state(cw))
        assert missing.state == "failed" and "alarm p99x does not exist in us-east-1" in missing.reason
