"""AWS FIS experiment templates (the ``create-experiment-template --cli-input-json`` shape): parsed and
validated strictly, with every problem listed in one error."""
from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults.base import FaultError
from faults.iso8601 import DurationError, parse_duration

logger = logging.getLogger(__name__)

TOP_KEYS = {"description": True, "actions": True, "stopConditions": True, "roleArn": True, "targets": False,
            "tags": False, "clientToken": False, "logConfiguration": False, "experimentOptions": False,
            "experimentReportConfiguration": False}
TARGET_KEYS = {"resourceType", "resourceArns", "resourceTags", "filters", "selectionMode", "parameters"}
ACTION_KEYS = {"actionId", "description", "parameters", "targets", "startAfter"}
STOP_SOURCES = ("none", "aws:cloudwatch:alarm")
EXPERIMENT_OPTIONS = {"accountTargeting": ("single-account", "multi-account"),
                      "emptyTargetResolutionMode": ("fail", "skip")}
_SELECTION = re.compile(r"ALL|COUNT\((\d+)\)|PERCENT\((\d+)\)")


class FisTemplateError(FaultError):
    """The template cannot run; ``problems`` lists every reason, each naming the JSON path."""

    def __init__(self, problems: list[str], *, source: str = "template") -> None:
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"FIS {source} is invalid ({len(problems)} problem(s)):\n{body}")


@dataclass(frozen=True)
class ActionSpec:
    """What an action id takes: target keys -> resource type, parameters, and whether it has a duration
    (``required`` / ``optional`` / ``none``). ``open`` specs accept any targets and parameters."""

    action_id: str
    targets: Mapping[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    duration: str = "none"
    open: bool = False
    description: str = ""

    @property
    def params(self) -> tuple[str, ...]:
        return (*self.required, *self.optional, *(("duration",) if self.duration != "none" else ()))




def _api_fault(kind: str, answer: str) -> ActionSpec:
    return ActionSpec(f"aws:fis:inject-api-{kind}-error", {"Roles": "aws:iam:role"},
                      required=("service", "operations", "percentage"), duration="required",
                      description=f"API calls answer {answer}")


KNOWN_SPECS: dict[str, ActionSpec] = {s.action_id: s for s in (
    ActionSpec("aws:fis:wait", duration="required", description="wait for the duration"),
    ActionSpec("aws:rds:failover-db-cluster", {"Clusters": "aws:rds:cluster"},
               description="fail over the DB cluster's writer to a reader"),
    ActionSpec("aws:rds:reboot-db-instances", {"DBInstances": "aws:rds:db"}, optional=("forceFailover",),
               choices={"forceFailover": ("true", "false")}, description="reboot, failing over if forceFailover"),
    ActionSpec("aws:dynamodb:global-table-pause-replication", {"Tables": "aws:dynamodb:global-table"},
               duration="required", description="pause global table replication"),
    ActionSpec("aws:network:disrupt-connectivity", {"Subnets": "aws:ec2:subnet"},
               optional=("scope", "prefixListIdentifier"), duration="required",
               choices={"scope": ("all", "availability-zone", "dynamodb", "prefix-list", "s3", "vpc")},
               description="deny traffic to and from the subnets"),
    ActionSpec("aws:network:route-table-disrupt-cross-region-connectivity", {"Subnets": "aws:ec2:subnet"},
               optional=("region", "preserveTransitGateway"), duration="required",
               description="block traffic from the subnets to another region"),
    _api_fault("internal", "InternalError"),
    _api_fault("throttle", "ThrottlingException"),
    _api_fault("unavailable", "ServiceUnavailable"),
)}


def open_spec(action_id: str) -> ActionSpec:
    return ActionSpec(action_id, duration="optional", open=True, description="(custom action)")


@dataclass(frozen=True)
class Target:
    name: str
    resource_type: str
    selection_mode: str
    resource_arns: tuple[str, ...] = ()
    resource_tags: Mapping[str, str] = field(default_factory=dict)
    filters: tuple[Mapping[str, Any], ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    name: str
    action_id: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    targets: Mapping[str, str] = field(default_factory=dict)
    start_after: tuple[str, ...] = ()
    description: str = ""
    duration: float | None = None  # seconds, unscaled


@dataclass(frozen=True)
class StopCondition:
    source: str
    value: str | None = None


@dataclass(frozen=True)
class Template:
    description: str
    actions: Mapping[str, Action]
    targets: Mapping[str, Target]
    stop_conditions: tuple[StopCondition, ...]
    role_arn: str
    tags: Mapping[str, str]
    options: Mapping[str, str]
    raw: Mapping[str, Any]

    def levels(self) -> list[list[str]]:
        """Actions grouped by the wave they can start in (each after everything it waits for)."""
        depth: dict[str, int] = {}

        def d(name: str) -> int:
            if name not in depth:
                depth[name] = 1 + max((d(p) for p in self.actions[name].start_after), default=-1)
            return depth[name]

        for name in self.actions:
            d(name)
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name in self.actions:
            out[depth[name]].append(name)
        return out


def load_template(source: str | Path | Mapping[str, Any], specs: Mapping[str, ActionSpec] | None = None) -> Template:
    """Parse and validate a template from a path, a JSON string, or a dict. ``specs`` maps every
    supported action id to its spec (unsupported ids are an error listing the supported ones)."""
    label = "template"
    if isinstance(source, Mapping):
        obj: Any = source
    else:
        text = str(source)
        path = Path(text) if isinstance(source, Path) or not text.lstrip().startswith(("{", "[")) else None
        if path is not None:
            label = f"template {path}"
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise FisTemplateError([f"cannot read it: {exc}"], source=label) from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FisTemplateError([f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"],
                                   source=label) from None
    problems: list[str] = []
    template = _parse(obj, problems, specs)
    if problems or template is None:
        raise FisTemplateError(problems, source=label)
    return template


def _keys(obj: Mapping[str, Any], allowed: set[str] | Mapping[str, Any], where: str, problems: list[str]) -> None:
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; allowed: {', '.join(sorted(allowed))}"
            problems.append(f"{where}: unknown key {key!r}{hint}")


def _str_map(value: Any, where: str, problems: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        problems.append(f"{where}: must be an object of string values (FIS takes strings, e.g. \"PT5M\", "
                        f"\"true\"), got {json.dumps(value)}")
        return {}
    return dict(value)


def _parse(obj: Any, problems: list[str], specs: Mapping[str, ActionSpec] | None) -> Template | None:
    if not isinstance(obj, Mapping):
        problems.append(f"the template must be a JSON object, got {type(obj).__name__}")
        return None
    _keys(obj, TOP_KEYS, "template", problems)
    for key, required in TOP_KEYS.items():
        if required and key not in obj:
            problems.append(f"template: missing required key {key!r}" + (
                " (any role ARN will do against the emulator)" if key == "roleArn" else ""))
    for key in ("description", "roleArn"):
        if key in obj and not isinstance(obj[key], str):
            problems.append(f"{key}: must be a string")
    targets = _targets(obj.get("targets") or {}, problems)
    actions = _actions(obj.get("actions"), targets, problems, specs)
    stops = _stops(obj.get("stopConditions"), problems)
    options = _str_map(obj.get("experimentOptions"), "experimentOptions", problems)
    for key, value in options.items():
        allowed = EXPERIMENT_OPTIONS.get(key)
        if allowed is None:
            problems.append(f"experimentOptions: unknown key {key!r}; allowed: {', '.join(EXPERIMENT_OPTIONS)}")
        elif value not in allowed:
            problems.append(f"experimentOptions.{key}: must be one of {', '.join(allowed)}, got {value!r}")
    tags = _str_map(obj.get("tags"), "tags", problems)
    if problems:
        return None
    return Template(description=obj["description"], actions=actions, targets=targets, stop_conditions=stops,
                    role_arn=obj["roleArn"], tags=tags, options=options, raw=obj)


def _targets(raw: Any, problems: list[str]) -> dict[str, Target]:
    if not isinstance(raw, Mapping):
        problems.append("targets: must be an object of target name -> target")
        return {}
    out = {}
    for name, t in raw.items():
        where = f"targets.{name}"
        if not isinstance(t, Mapping):
            problems.append(f"{where}: must be an object")
            continue
        _keys(t, TARGET_KEYS, where, problems)
        rtype, mode = t.get("resourceType"), t.get("selectionMode")
        if not isinstance(rtype, str) or not rtype:
            problems.append(f"{where}: missing resourceType (e.g. aws:rds:cluster)")
        if not isinstance(mode, str) or not _valid_selection(mode):
            problems.append(f"{where}: selectionMode must be ALL, COUNT(n) with n >= 1 or PERCENT(n) with "
                            f"1 <= n <= 100, got {mode!r}")
        arns = t.get("resourceArns")
        if arns is not None and (not isinstance(arns, list) or not all(isinstance(a, str) and a.startswith("arn:")
                                                                         for a in arns)):
            problems.append(f"{where}: resourceArns must be a list of ARNs (arn:aws:...), got {json.dumps(arns)}")
            arns = None
        tags = _str_map(t.get("resourceTags"), f"{where}.resourceTags", problems)
        params = _str_map(t.get("parameters"), f"{where}.parameters", problems)
        filters = t.get("filters") or []
        if not isinstance(filters, list) or not all(
                isinstance(f, Mapping) and set(f) == {"path", "values"} and isinstance(f["values"], list)
                for f in filters):
            problems.append(f"{where}: filters must be a list of {{\"path\": ..., \"values\": [...]}}")
            filters = []
        if arns and tags:
            problems.append(f"{where}: give resourceArns or resourceTags, not both")
        if not arns and not tags and not params:
            problems.append(f"{where}: name the resources with resourceArns or resourceTags")
        if isinstance(rtype, str) and isinstance(mode, str):
            out[name] = Target(name, rtype, mode, tuple(arns or ()), tags, tuple(filters), params)
    return out


def _valid_selection(mode: str) -> bool:
    m = _SELECTION.fullmatch(mode)
    if not m:
        return False
    if m.group(1) is not None:
        return int(m.group(1)) >= 1
    if m.group(2) is not None:
        return 1 <= int(m.group(2)) <= 100
    return True


def _actions(raw: Any, targets: Mapping[str, Target], problems: list[str],
             specs: Mapping[str, ActionSpec] | None) -> dict[str, Action]:
    if not isinstance(raw, Mapping) or not raw:
        if raw is not None:
            problems.append("actions: must be a non-empty object of action name -> action")
        return {}
    out = {}
    for name, a in raw.items():
        where = f"actions.{name}"
        if not isinstance(a, Mapping):
            problems.append(f"{where}: must be an object")
            continue
        _keys(a, ACTION_KEYS, where, problems)
        action_id = a.get("actionId")
        if not isinstance(action_id, str) or not action_id:
            problems.append(f"{where}: missing actionId (e.g. aws:rds:failover-db-cluster)")
            continue
        params = _str_map(a.get("parameters"), f"{where}.parameters", problems)
        tmap = _str_map(a.get("targets"), f"{where}.targets", problems)
        after = a.get("startAfter") or []
        if not isinstance(after, list) or not all(isinstance(x, str) for x in after):
            problems.append(f"{where}.startAfter: must be a list of action names")
            after = []
        for dep in after:
            if dep == name:
                problems.append(f"{where}.startAfter: an action cannot start after itself")
            elif dep not in raw:
                problems.append(f"{where}.startAfter: unknown action {dep!r}; actions: {', '.join(raw)}")
        duration = None
        if "duration" in params:
            try:
                duration = parse_duration(params["duration"])
            except DurationError as exc:
                problems.append(f"{where}.parameters.duration: {exc}")
        spec = None
        if specs is not None:
            spec = specs.get(action_id)
            if spec is None:
                problems.append(f"{where}: action {action_id!r} is not supported here; supported: "
                                f"{', '.join(sorted(specs))} (register a handler with register_action)")
        if spec is not None:
            _check_spec(where, spec, params, tmap, targets, problems)
        for key, tname in tmap.items():
            if tname not in targets:
                problems.append(f"{where}.targets.{key}: unknown target {tname!r}; targets: "
                                f"{', '.join(targets) or '(none defined)'}")
        out[name] = Action(name, action_id, params, tmap, tuple(after), str(a.get("description", "")), duration)
    cycle = _find_cycle({n: [d for d in a.start_after if d in out] for n, a in out.items()})
    if cycle:
        problems.append(f"actions: startAfter forms a cycle: {' -> '.join(cycle)}")
    return out


def _check_spec(where: str, spec: ActionSpec, params: Mapping[str, str], tmap: Mapping[str, str],
                targets: Mapping[str, Target], problems: list[str]) -> None:
    if spec.duration == "required" and "duration" not in params:
        problems.append(f"{where}: {spec.action_id} needs parameters.duration (ISO-8601, e.g. PT5M)")
    if spec.open:
        return
    for p in spec.required:
        if p not in params:
            problems.append(f"{where}: {spec.action_id} needs parameters.{p}")
    for p in params:
        if p not in spec.params:
            problems.append(f"{where}.parameters: {spec.action_id} takes no parameter {p!r}; it takes "
                            f"{', '.join(spec.params) or 'none'}")
    for p, allowed in spec.choices.items():
        if p in params and params[p] not in allowed:
            problems.append(f"{where}.parameters.{p}: must be one of {', '.join(allowed)}, got {params[p]!r}")
    for key in spec.targets:
        if key not in tmap:
            problems.append(f"{where}: {spec.action_id} needs targets.{key} ({spec.targets[key]})")
    for key, tname in tmap.items():
        if key not in spec.targets:
            problems.append(f"{where}.targets: {spec.action_id} takes no target {key!r}; it takes "
                            f"{', '.join(spec.targets) or 'none'}")
        elif tname in targets and targets[tname].resource_type != spec.targets[key]:
            problems.append(f"{where}.targets.{key}: target {tname!r} is {targets[tname].resource_type}, but "
                            f"{spec.action_id} needs {spec.targets[key]}")


def _find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in graph:
        if n not in state and (found := visit(n)):
            return found
    return None


def _stops(raw: Any, problems: list[str]) -> tuple[StopCondition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        problems.append('stopConditions: must be a non-empty list, e.g. [{"source": "none"}]')
        return ()
    out = []
    for i, sc in enumerate(raw):
        where = f"stopConditions[{i}]"
        if not isinstance(sc, Mapping):
            problems.append(f"{where}: must be an object")
            continue
        _keys(sc, {"source", "value"}, where, problems)
        source, value = sc.get("source"), sc.get("value")
        if source not in STOP_SOURCES:
            problems.append(f"{where}.source: must be one of {', '.join(STOP_SOURCES)}, got {source!r}")
        elif source == "none" and value is not None:
            problems.append(f"{where}: source none takes no value")
        elif source == "aws:cloudwatch:alarm" and not (isinstance(value, str) and value.startswith("arn:")
                                                       and ":alarm:" in value):
            problems.append(f"{where}.value: must be a CloudWatch alarm ARN (arn:aws:cloudwatch:REGION:ACCOUNT:"
                            f"alarm:NAME), got {value!r}")
        else:
            out.append(StopCondition(str(source), value))
    return tuple(out)
