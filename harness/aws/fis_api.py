"""The emulator's AWS FIS runs what it is asked to: StartExperiment (from boto3, the aws CLI, a game-day drill
pointed at ``dbdrill up``) runs the template's actions against the emulator in the background -- the runner of
``dbdrill fis run``, every action faults.fis_emulator supports, targets by ARN or by tags, CloudWatch alarm stop
conditions -- at the FIS time scale; moto keeps the records, and GetExperiment / ListExperiments report the real
state of the experiment and of each action; StopExperiment stops it, healing what runs. A template dbdrill cannot
run is refused at StartExperiment with a ValidationException saying why (moto alone would accept anything and run
nothing)."""
from __future__ import annotations

import json
import logging
import threading
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.aws.server import HttpResponse
from harness.aws.wire import error_response, json_response, service_spec

if TYPE_CHECKING:
    from faults.fis import ExperimentRunner
    from faults.fis_template import Target
    from harness.aws.endpoint import AwsEndpoint
    from harness.aws.middleware import Call
    from harness.aws.wire import RequestInfo

logger = logging.getLogger(__name__)

# Template fields of moto's record that an experiment template JSON (create-experiment-template) carries.
TEMPLATE_FIELDS = ("description", "targets", "actions", "stopConditions", "roleArn", "experimentOptions")
# FIS time scale by time profile: fast runs PT5M in 3 s (as ``dbdrill fis run``), aws in 5 minutes.
DEFAULT_TIME_SCALE = {"fast": 0.01, "aws": 1.0}
ACTION_REASONS = {"pending": "Action is pending", "running": "Action is running", "completed": "Action completed",
                  "stopped": "Action stopped", "cancelled": "Action cancelled", "failed": "Action failed"}


@dataclass
class Run:
    """One experiment started through the API: its runner and the thread running it."""

    experiment_id: str
    region: str
    runner: ExperimentRunner
    thread: threading.Thread | None = None


class FisExperiments:
    """Interceptor for the FIS API of an AwsEndpoint (StartExperiment, StopExperiment; the rest is moto's)."""

    def __init__(self, endpoint: AwsEndpoint, time_scale: float) -> None:
        self.endpoint = endpoint
        self.time_scale = time_scale
        self.spec = service_spec("fis")
        self.runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def applies(self, info: RequestInfo) -> bool:
        return self.spec.matches(info)

    def __call__(self, call: Call) -> HttpResponse:
        operation = self.spec.operation_of(call.info, call.request)
        if operation == "StartExperiment":
            return self._start(call)
        if operation == "StopExperiment":
            return self._stop(call)
        return call.forward()

    # -- start ---------------------------------------------------------------------------------------------
    def _start(self, call: Call) -> HttpResponse:
        from faults.base import FaultError

        try:
            body = json.loads(call.request.body or b"{}")
        except ValueError:
            return call.forward()
        region = call.info.region or self.endpoint.default_region
        template_id = body.get("experimentTemplateId") if isinstance(body, dict) else None
        with self.endpoint.lock:
            backend = self.endpoint.backend("fis", region)
            record = backend.experiment_templates.get(template_id) if isinstance(template_id, str) else None
            raw = record.to_dict() if record is not None else None
        if raw is None:
            return call.forward()  # moto answers ResourceNotFoundException
        template = {k: raw[k] for k in TEMPLATE_FIELDS if raw.get(k) not in (None, {}, [])}
        try:
            runner = self._runner(template, region)
        except (FaultError, ValueError) as exc:
            return error_response("rest-json", "ValidationException",
                                  f"dbdrill cannot run experiment template {template_id}: {exc}", 400,
                                  spec=self.spec)
        response = call.forward()
        if response.status != 200:
            return response
        experiment_id = str(json.loads(response.body)["experiment"]["id"])
        run = Run(experiment_id, region, runner)
        runner.record.id = experiment_id
        with self.endpoint.lock:
            experiment = backend.experiments[experiment_id]
            _take_over(experiment, run)
            experiment.status = "initiating"
            payload = {"experiment": experiment.to_dict(tags=backend.tagger.get_tag_dict_for_resource(
                experiment.arn))}
        with self._lock:
            self.runs[experiment_id] = run
        run.thread = threading.Thread(target=self._run, args=(run,), name=f"dbdrill-fis-{experiment_id[:8]}",
                                      daemon=True)
        run.thread.start()
        logger.info("FIS experiment %s from template %s started (time scale %g)", experiment_id, template_id,
                    self.time_scale)
        return json_response(200, payload)

    def _runner(self, template: dict[str, Any], region: str) -> ExperimentRunner:
        from faults.fis import ExperimentRunner, cloudwatch_alarm_state, default_registry
        from faults.fis_emulator import register_all

        registry = default_registry.copy()
        register_all(registry)
        endpoint = self.endpoint
        alarms = cloudwatch_alarm_state(lambda r: endpoint.client("cloudwatch", region=r))
        return ExperimentRunner(template, registry=registry, time_scale=self.time_scale, alarm_state=alarms,
                                resolver=lambda target: self._resolve(target, region),
                                extra={"endpoint": endpoint, "stack": endpoint.stack})

    def _run(self, run: Run) -> None:
        status, reason = "failed", "the experiment did not run"
        try:
            self._set(run, "running")
            record = run.runner.run()
            status, reason = record.state, record.reason
        except Exception as exc:
            logger.exception("FIS experiment %s failed", run.experiment_id)
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._set(run, status, reason)

    def _set(self, run: Run, status: str, reason: str | None = None) -> None:
        with self.endpoint.lock:
            try:
                experiment = self.endpoint.backend("fis", run.region).experiments[run.experiment_id]
            except Exception:
                return  # the state was reset meanwhile
            experiment.status = status
            if reason:
                experiment.STATUS_REASONS = {**type(experiment).STATUS_REASONS, status: reason}

    # -- stop ----------------------------------------------------------------------------------------------
    def _stop(self, call: Call) -> HttpResponse:
        experiment_id = call.request.path.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            run = self.runs.get(experiment_id)
        response = call.forward()
        if run is not None and response.status == 200:
            run.runner.stop("stopped by the user")
        return response

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every running experiment (healing its actions) and forget them: between tests, at shutdown."""
        with self._lock:
            runs, self.runs = list(self.runs.values()), {}
        for run in runs:
            run.runner.stop("the emulator was reset")
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout)

    # -- targets by tags -----------------------------------------------------------------------------------
    def _resolve(self, target: Target, region: str) -> list[str]:
        """ARNs of the emulated resources of the target's type carrying every one of its tags."""
        from faults.base import FaultError

        want = dict(target.resource_tags)
        if target.filters or target.parameters or not want:
            raise FaultError(f"target {target.name}: dbdrill resolves targets by resourceArns or resourceTags "
                             "only (not by filters or parameters)")
        client = self.endpoint.client
        found: list[tuple[str, dict[str, str]]] = []
        kind = target.resource_type
        if kind == "aws:rds:cluster":
            for c in client("rds", region=region).describe_db_clusters()["DBClusters"]:
                found.append((c["DBClusterArn"], _tags(c.get("TagList"))))
        elif kind == "aws:rds:db":
            for d in client("rds", region=region).describe_db_instances()["DBInstances"]:
                found.append((d["DBInstanceArn"], _tags(d.get("TagList"))))
        elif kind == "aws:ec2:subnet":
            for s in client("ec2", region=region).describe_subnets()["Subnets"]:
                arn = s.get("SubnetArn") or f"arn:aws:ec2:{region}:{s.get('OwnerId')}:subnet/{s['SubnetId']}"
                found.append((arn, _tags(s.get("Tags"))))
        elif kind == "aws:dynamodb:global-table":
            ddb = client("dynamodb", region=region)
            for name in ddb.list_tables()["TableNames"]:
                arn = ddb.describe_table(TableName=name)["Table"]["TableArn"]
                found.append((arn, _tags(ddb.list_tags_of_resource(ResourceArn=arn).get("Tags"))))
        else:
            raise FaultError(f"target {target.name}: resources of type {kind} are selected by resourceArns only "
                             "here (tags are resolved for aws:rds:cluster, aws:rds:db, aws:ec2:subnet, "
                             "aws:dynamodb:global-table)")
        return [arn for arn, tags in found if all(tags.get(k) == v for k, v in want.items())]


def _tags(items: Any) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in items or [] if "Key" in t}


def _take_over(experiment: Any, run: Run) -> None:
    """moto's record of the experiment follows the runner: no automatic state transitions, each action's state
    and times from the runner's record."""
    experiment._transitions = []

    def sync(self: Any) -> str:
        status = str(self._status)
        if status in self.TERMINAL_STATUSES and self.end_time is None:
            from moto.core.utils import unix_time

            self.end_time = unix_time()
        for name, action in self.actions.items():
            ar = run.runner.record.actions.get(name)
            if ar is None:
                continue
            action["state"] = {"status": ar.state, "reason": ar.error or ACTION_REASONS.get(ar.state, ar.state)}
            if ar.start is not None:
                action["startTime"] = ar.start
            if ar.end is not None:
                action["endTime"] = ar.end
        return status

    experiment._sync_state = types.MethodType(sync, experiment)
