"""Runs AWS FIS experiment templates against dbdrill: actions as a DAG (startAfter), each action's
ISO-8601 duration (scaled by ``time_scale``), stop conditions polled, everything healed on the way out."""
from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults.base import Fault, FaultError
from faults.fis_template import (
    KNOWN_SPECS,
    Action,
    ActionSpec,
    FisTemplateError,
    Target,
    Template,
    load_template,
    open_spec,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ActionContext",
    "ActionSpec",
    "ExperimentRecord",
    "ExperimentRunner",
    "FisTemplateError",
    "Registry",
    "Template",
    "WaitFault",
    "cloudwatch_alarm_state",
    "default_registry",
    "load_template",
    "register_action",
    "run_experiment",
]

AlarmState = Callable[[str], str]           # alarm ARN -> "OK" | "ALARM" | "INSUFFICIENT_DATA"
Resolver = Callable[[Target], list[str]]    # a target by tags / filters / parameters -> resource ARNs


@dataclass
class ActionContext:
    """Handed to action handlers: who is asking, how long the action lasts (already scaled), the
    experiment's time scale and random source, and what the integration put in ``extra`` (a stack...)."""

    experiment_id: str
    action_name: str
    action_id: str
    duration: float | None
    time_scale: float
    rng: random.Random
    stop_event: threading.Event
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[dict[str, str], dict[str, list[str]], ActionContext], Fault]


class WaitFault(Fault):
    """``aws:fis:wait``: nothing breaks; the window only marks the pause (checkers skip kind ``wait``)."""

    kind = "wait"

    def _inject(self) -> None:
        pass

    def _heal(self) -> None:
        pass


def _wait_handler(params: dict[str, str], targets: dict[str, list[str]], ctx: ActionContext) -> Fault:
    return WaitFault(name=ctx.action_name)


class Registry:
    """Action id -> handler (+ spec). Real FIS ids get their spec from ``KNOWN_SPECS``; custom ids take
    any targets and parameters unless a spec is given."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, ActionSpec]] = {}
        self._lock = threading.Lock()

    def register(self, action_id: str, handler: Handler, *, spec: ActionSpec | None = None,
                 replace: bool = False) -> None:
        if not callable(handler):
            raise FaultError(f"handler for {action_id} must be callable(params, targets, ctx) -> Fault")
        with self._lock:
            if action_id in self._handlers and not replace:
                raise FaultError(f"an FIS action handler for {action_id} is already registered (replace=True to "
                                 "swap it)")
            self._handlers[action_id] = (handler, spec or KNOWN_SPECS.get(action_id) or open_spec(action_id))

    def unregister(self, action_id: str) -> None:
        with self._lock:
            self._handlers.pop(action_id, None)

    def supported(self) -> list[str]:
        with self._lock:
            return sorted(self._handlers)

    def specs(self) -> dict[str, ActionSpec]:
        with self._lock:
            return {k: spec for k, (_, spec) in self._handlers.items()}

    def handler(self, action_id: str) -> Handler:
        with self._lock:
            return self._handlers[action_id][0]

    def copy(self) -> Registry:
        new = Registry()
        with self._lock:
            new._handlers = dict(self._handlers)
        return new


default_registry = Registry()
default_registry.register("aws:fis:wait", _wait_handler)


def register_action(action_id: str, handler: Handler, *, spec: ActionSpec | None = None,
                    replace: bool = False) -> None:
    """Make ``action_id`` runnable: ``handler(params, targets, ctx) -> Fault``. The runner starts the
    fault, keeps it for the action's (scaled) duration, then stops it; an action without a duration
    (a failover) is started and stopped at once, so its heal may be a no-op."""
    default_registry.register(action_id, handler, spec=spec, replace=replace)


@dataclass
class ActionRecord:
    name: str
    action_id: str
    start_after: list[str]
    duration: float | None              # template seconds
    scaled_duration: float | None       # what the run used
    state: str = "pending"              # pending | running | completed | stopped | cancelled | failed
    targets: dict[str, list[str]] = field(default_factory=dict)
    start: float | None = None          # epoch
    end: float | None = None
    start_mono: float | None = None
    end_mono: float | None = None
    fault: str | None = None
    error: str | None = None
    injected: float | None = None       # epoch when the fault had taken effect

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExperimentRecord:
    """What ran: state completed / stopped / failed with the reason, and every action's actual times."""

    id: str
    description: str
    time_scale: float
    state: str = "pending"
    reason: str = ""
    start: float | None = None
    end: float | None = None
    start_mono: float | None = None
    end_mono: float | None = None
    actions: dict[str, ActionRecord] = field(default_factory=dict)
    targets: dict[str, list[str]] = field(default_factory=dict)
    stop_conditions: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "actions"}
        d["actions"] = {n: a.to_dict() for n, a in self.actions.items()}
        return d


class ExperimentRunner:
    """Validates ``template`` against the registry (and resolves its targets) when made, so nothing
    starts if anything is wrong; ``run()`` executes it and returns the ExperimentRecord.

    ``time_scale``: every duration is multiplied by it (0.01 makes PT5M last 3 s). ``alarm_state``:
    called with each stop condition's alarm ARN every ``poll_interval`` s; ``"ALARM"`` stops the
    experiment. ``resolver``: ARNs for targets given by tags / filters / parameters. ``extra``: passed
    to handlers in ``ctx.extra``. ``timeout``: bound on the whole run (default: all durations + 60 s)."""

    def __init__(self, template: Template | str | Path | Mapping[str, Any], *, registry: Registry | None = None,
                 time_scale: float = 1.0, alarm_state: AlarmState | None = None, resolver: Resolver | None = None,
                 extra: Mapping[str, Any] | None = None, seed: int | None = None, poll_interval: float = 0.05,
                 timeout: float | None = None) -> None:
        self.registry = (registry or default_registry).copy()
        specs = self.registry.specs()
        if isinstance(template, Template):
            template = template.raw
        self.template = load_template(template, specs)
        if not (isinstance(time_scale, int | float) and math.isfinite(time_scale) and time_scale > 0):
            raise FaultError(f"time_scale must be a positive number (0.01 makes PT5M last 3 s), got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.alarm_state = alarm_state
        self.poll_interval = poll_interval
        self.extra = dict(extra or {})
        self.rng = random.Random(seed)
        problems = []
        alarms = [sc.value for sc in self.template.stop_conditions if sc.source == "aws:cloudwatch:alarm"]
        if alarms and alarm_state is None:
            problems.append(f"stopConditions name CloudWatch alarms ({', '.join(map(str, alarms))}) but no "
                            "alarm_state callable was given to read them")
        self.resolved = self._resolve(resolver, problems)
        if problems:
            raise FisTemplateError(problems, source="experiment")
        total = sum((a.duration or 0.0) for a in self.template.actions.values()) * self.time_scale
        self.timeout = timeout if timeout is not None else total + 60.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # an action ended or a stop came: look again at once
        self._stop_reason: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}
        self.record = ExperimentRecord(
            id=f"EXP{uuid.uuid4().hex[:14]}", description=self.template.description, time_scale=self.time_scale,
            targets=self.resolved, tags=dict(self.template.tags),
            stop_conditions=[{"source": sc.source, "value": sc.value} for sc in self.template.stop_conditions],
            actions={n: ActionRecord(n, a.action_id, list(a.start_after), a.duration,
                                     None if a.duration is None else a.duration * self.time_scale,
                                     targets={k: list(self.resolved.get(t, [])) for k, t in a.targets.items()})
                     for n, a in self.template.actions.items()},
        )

    def _resolve(self, resolver: Resolver | None, problems: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        skip_empty = self.template.options.get("emptyTargetResolutionMode") == "skip"
        for name, target in self.template.targets.items():
            if target.resource_arns and not target.filters:
                found = list(target.resource_arns)
            elif resolver is None:
                problems.append(f"targets.{name}: selects resources by tags / filters / parameters; pass "
                                "resolver=callable(target) -> [arn, ...] to find them")
                continue
            else:
                found = list(resolver(target))
            if not found and not skip_empty:
                problems.append(f"targets.{name}: no resources matched ({target.resource_type}); FIS fails an "
                                "experiment whose target resolves to nothing (experimentOptions."
                                "emptyTargetResolutionMode=skip to go on)")
            out[name] = self._select(name, target.selection_mode, sorted(found), problems)
        return out

    def _select(self, name: str, mode: str, found: list[str], problems: list[str]) -> list[str]:
        if mode == "ALL" or not found:
            return found
        n = int(mode[mode.index("(") + 1:-1])
        if mode.startswith("PERCENT"):
            n = max(1, math.floor(len(found) * n / 100))
        elif n > len(found):
            problems.append(f"targets.{name}: selectionMode {mode} but only {len(found)} resource(s) matched")
            return found
        return sorted(self.rng.sample(found, n))

    # -- running ------------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped by the user", state: str = "stopped") -> None:
        """Stop the experiment from another thread: running actions end and heal, pending ones cancel."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = (state, reason)
        self._stop.set()
        self._wake.set()

    def run(self) -> ExperimentRecord:
        rec = self.record
        if rec.state != "pending":
            raise FaultError(f"experiment {rec.id} already ran; make a new ExperimentRunner")
        rec.state, rec.start, rec.start_mono = "running", time.time(), time.monotonic()
        logger.info("FIS experiment %s (%s) running, time scale %g", rec.id, rec.description, self.time_scale)
        threads: dict[str, threading.Thread] = {}
        deadline = rec.start_mono + self.timeout
        try:
            self._poll_alarms()
            while not self._stop.is_set():
                done = {n for n, a in rec.actions.items() if a.state == "completed"}
                for name, action in self.template.actions.items():
                    if name not in threads and set(action.start_after) <= done:
                        threads[name] = threading.Thread(target=self._run_action, args=(action,),
                                                         name=f"fis-{name}", daemon=True)
                        rec.actions[name].state = "running"
                        threads[name].start()
                if len(done) == len(rec.actions):
                    break
                if time.monotonic() > deadline:
                    self.stop(f"timed out after {self.timeout:.1f}s", "failed")
                    break
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                self._poll_alarms()
        except BaseException as exc:
            self.stop(f"interrupted: {type(exc).__name__}: {exc}")
            raise
        finally:
            self._finish(threads)
        return rec

    def _poll_alarms(self) -> None:
        if self.alarm_state is None:
            return
        for sc in self.template.stop_conditions:
            if sc.source != "aws:cloudwatch:alarm" or sc.value is None:
                continue
            try:
                state = self.alarm_state(sc.value)
            except Exception as exc:
                self.stop(f"could not read stop condition {sc.value}: {exc}", "failed")
                return
            if state == "ALARM":
                self.stop(f"stop condition {sc.value} is in ALARM")
                return

    def _run_action(self, action: Action) -> None:
        ar = self.record.actions[action.name]
        ctx = ActionContext(self.record.id, action.name, action.action_id, ar.scaled_duration, self.time_scale,
                            random.Random(self.rng.random()), self._stop, self.extra)
        fault: Fault | None = None
        try:
            fault = self.registry.handler(action.action_id)(dict(action.parameters), dict(ar.targets), ctx)
            if not isinstance(fault, Fault):
                raise FaultError(f"handler for {action.action_id} returned {fault!r}, not a Fault")
            ar.fault = fault.name
            with self._lock:
                if self._stop.is_set():
                    ar.state = "cancelled"
                    return
                self._faults[action.name] = fault
            ar.start, ar.start_mono = time.time(), time.monotonic()
            fault.start()
            ar.injected = time.time()
            if ar.scaled_duration and self._stop.wait(ar.scaled_duration):
                ar.state = "stopped"
            self._heal(action.name)
            if ar.state == "running":
                ar.state = "completed"
        except Exception as exc:
            logger.error("FIS action %s (%s) failed: %s", action.name, action.action_id, exc)
            ar.state, ar.error = "failed", f"{type(exc).__name__}: {exc}"
            self._heal(action.name)
            self.stop(f"action {action.name} ({action.action_id}) failed: {exc}", "failed")
        finally:
            if ar.start_mono is not None:
                ar.end, ar.end_mono = time.time(), time.monotonic()
            self._wake.set()

    def _heal(self, name: str) -> None:
        with self._lock:
            fault = self._faults.pop(name, None)
        if fault is not None:
            fault.heal()

    def _finish(self, threads: dict[str, threading.Thread]) -> None:
        rec = self.record
        join_by = time.monotonic() + 30.0
        for t in threads.values():
            t.join(max(0.0, join_by - time.monotonic()))
        for name in list(self._faults):
            try:
                self._heal(name)
            except Exception as exc:
                logger.error("healing FIS action %s failed: %s", name, exc)
                rec.actions[name].error = f"heal: {type(exc).__name__}: {exc}"
        for ar in rec.actions.values():
            if ar.state == "pending":
                ar.state = "cancelled"
            elif ar.state == "running":
                ar.state = "stopped"
        if self._stop_reason is not None:
            rec.state, rec.reason = self._stop_reason
        else:
            rec.state, rec.reason = "completed", "all actions completed"
        rec.end, rec.end_mono = time.time(), time.monotonic()
        logger.info("FIS experiment %s %s: %s", rec.id, rec.state, rec.reason)


def cloudwatch_alarm_state(clients: Any) -> AlarmState:
    """An ``alarm_state`` reading CloudWatch: ``clients`` is a boto3 CloudWatch client, or a callable
    region -> client (alarm ARNs carry their region). A missing alarm raises, which fails the
    experiment before or while it runs (the safe side)."""

    def state(arn: str) -> str:
        parts = arn.split(":")
        if len(parts) < 7 or parts[5] != "alarm":
            raise FaultError(f"not a CloudWatch alarm ARN: {arn!r}")
        client = clients if hasattr(clients, "describe_alarms") else clients(parts[3])
        name = ":".join(parts[6:])
        alarms = client.describe_alarms(AlarmNames=[name]).get("MetricAlarms", [])
        if not alarms:
            raise FaultError(f"stop condition alarm {name} does not exist in {parts[3]} (account {parts[4]})")
        return str(alarms[0]["StateValue"])

    return state


def run_experiment(template: Template | str | Path | Mapping[str, Any], **options: Any) -> ExperimentRecord:
    """Validate, then run ``template`` (see ExperimentRunner for the options); returns the record."""
    return ExperimentRunner(template, **options).run()
