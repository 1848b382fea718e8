"""``dbdrill fault``: inject and heal faults on a running ``dbdrill up`` through its control endpoint, and the
registry of named fault kinds that endpoint builds faults from (other areas register theirs)."""
from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from faults.base import Fault, FaultError

if TYPE_CHECKING:
    from harness.stack import Stack


@dataclass(frozen=True)
class Param:
    """One parameter of a fault kind: ``--name VALUE`` on the command line, ``params[name]`` in the API."""

    name: str
    help: str
    type: type = str
    multiple: bool = False
    required: bool = False
    choices: tuple[str, ...] | None = None
    default: Any = None

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class FaultKind:
    name: str
    help: str
    build: Callable[[Stack, dict[str, Any]], Fault]
    params: tuple[Param, ...] = field(default_factory=tuple)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "help": self.help, "params": [
            {"name": p.name, "help": p.help, "type": p.type.__name__, "multiple": p.multiple,
             "required": p.required, "choices": list(p.choices) if p.choices else None, "default": p.default}
            for p in self.params]}


_kinds: dict[str, FaultKind] = {}
_kinds_lock = threading.Lock()


def register_fault_kind(kind: FaultKind, *, replace: bool = False) -> None:
    """Make ``kind`` injectable as ``dbdrill fault inject NAME`` (and ``dbdrill fault NAME``)."""
    with _kinds_lock:
        if kind.name in _kinds and not replace:
            raise ValueError(f"fault kind {kind.name!r} is already registered")
        _kinds[kind.name] = kind


def fault_kinds() -> dict[str, FaultKind]:
    with _kinds_lock:
        return dict(_kinds)


def build_fault(stack: Stack, name: str, params: dict[str, Any]) -> Fault:
    """A fault of kind ``name`` from JSON-ish ``params``; FaultError saying what is wrong otherwise."""
    kind = fault_kinds().get(name)
    if kind is None:
        raise FaultError(f"unknown fault kind {name!r}; known: {', '.join(sorted(fault_kinds()))}")
    known = {p.key: p for p in kind.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise FaultError(f"{name}: unknown parameter(s) {', '.join(unknown)}; it takes "
                         f"{', '.join(p.name for p in kind.params)}")
    values: dict[str, Any] = {}
    for key, p in known.items():
        raw = params.get(key)
        if raw in (None, [], ()):
            if p.required:
                raise FaultError(f"{name}: --{p.name} is required ({p.help})")
            values[key] = [] if p.multiple and p.default is None else p.default
            continue
        items = raw if isinstance(raw, list | tuple) else [raw]
        try:
            converted = [p.type(v) for v in items]
        except (TypeError, ValueError) as exc:
            raise FaultError(f"{name}: --{p.name} expects a {p.type.__name__}, got {raw!r}") from exc
        if p.choices and any(v not in p.choices for v in converted):
            raise FaultError(f"{name}: --{p.name} must be one of {', '.join(p.choices)}, got {raw!r}")
        values[key] = converted if p.multiple else converted[-1]
    return kind.build(stack, values)


# -- built-in kinds ------------------------------------------------------------------------------------
_SELECT = (
    Param("service", "AWS service (botocore name: dynamodb, rds, sqs...)", required=True),
    Param("operation", "operation to fail (repeatable; default all)", multiple=True),
    Param("region", "region to fail (repeatable; default all)", multiple=True),
    Param("probability", "share of matching requests to fail, 0..1", float, default=1.0),
)


def _api(factory_name: str) -> Callable[[Stack, dict[str, Any]], Fault]:
    def build(stack: Stack, p: dict[str, Any]) -> Fault:
        from faults import api

        factory = getattr(api, factory_name)
        common = {"operations": p["operation"] or None, "regions": p["region"] or None, "endpoint": stack.aws}
        if factory_name == "api_latency":
            return factory(p["service"], p["ms"], jitter_ms=p["jitter_ms"], probability=p["probability"], **common)
        if factory_name == "api_error":
            return factory(p["service"], error=p["error"], status=p["status"], probability=p["probability"],
                           **common)
        fault: Fault = factory(p["service"], probability=p["probability"], **common)
        return fault

    return build


def _region_outage(stack: Stack, p: dict[str, Any]) -> Fault:
    from faults.outage import region_outage

    return region_outage(p["region"], p["mode"], endpoint=stack.aws)


def _pause_replication(stack: Stack, p: dict[str, Any]) -> Fault:
    from faults.dynamodb import pause_replication

    return pause_replication(p["table"], p["region"] or None, endpoint=stack.aws)


def _network(factory_name: str) -> Callable[[Stack, dict[str, Any]], Fault]:
    def build(stack: Stack, p: dict[str, Any]) -> Fault:
        from faults import network

        factory = getattr(network, factory_name)
        client = stack.toxiproxy
        if factory_name == "latency":
            fault: Fault = factory(p["proxy"], p["ms"], p["jitter_ms"], p["stream"], client=client)
        elif factory_name == "bandwidth":
            fault = factory(p["proxy"], p["kbps"], p["stream"], client=client)
        else:
            fault = factory(p["proxy"], client=client)
        return fault

    return build


def _db(factory_name: str) -> Callable[[Stack, dict[str, Any]], Fault]:
    def build(stack: Stack, p: dict[str, Any]) -> Fault:
        from faults import database

        rec = stack.rds
        if factory_name == "az_outage":
            fault: Fault = database.az_outage(p["region"] or stack.aws.default_region, p["az"], reconciler=rec)
        elif factory_name == "replica_lag":
            fault = database.replica_lag(p["instance"], p["seconds"], region=p["region"], reconciler=rec)
        else:
            fault = getattr(database, factory_name)(p["instance"], region=p["region"], reconciler=rec)
        return fault

    return build


_INSTANCE = (Param("instance", "DB instance identifier", required=True),
             Param("region", "its region (default: the default region)"))

_PROXY = Param("proxy", "fault proxy name (repeatable; list them: curl $DBDRILL_TOXIPROXY_URL/proxies)",
               multiple=True, required=True)
_STREAM = Param("stream", "direction", choices=("downstream", "upstream", "both"), default="downstream")

for _kind in (
    FaultKind("latency", "added latency on fault proxies", _network("latency"), (
        _PROXY, Param("ms", "milliseconds", float, required=True),
        Param("jitter-ms", "+- random jitter in milliseconds", float, default=0.0), _STREAM)),
    FaultKind("partition", "fault proxies refuse connections and drop open ones", _network("partition"), (_PROXY,)),
    FaultKind("blackhole", "fault proxies accept but never answer", _network("blackhole"), (_PROXY,)),
    FaultKind("bandwidth", "fault proxies limited to KB/s", _network("bandwidth"), (
        _PROXY, Param("kbps", "KB/s (1 KB = 1000 bytes)", float, required=True), _STREAM)),
    FaultKind("kill-primary", "crash a DB instance's primary (SIGKILL); RDS recovers as it would",
              _db("kill_primary"), _INSTANCE),
    FaultKind("fence", "a DB instance's primary unreachable (blackholed), no failover", _db("fence"), _INSTANCE),
    FaultKind("force-failover", "Multi-AZ failover now (reboot with failover)", _db("force_failover"), _INSTANCE),
    FaultKind("replica-lag", "a read replica applies changes this late", _db("replica_lag"), (
        *_INSTANCE, Param("seconds", "apply delay in seconds", float, required=True))),
    FaultKind("db-replication-pause", "a read replica's replication link cut", _db("pause_replication"),
              _INSTANCE),
    FaultKind("az-outage", "every DB host in an availability zone cut off; Multi-AZ instances fail over",
              _db("az_outage"), (Param("az", "availability zone, e.g. us-east-1a", required=True),
                                 Param("region", "its region (default: the default region)"))),
    FaultKind("region-outage", "every endpoint of a region unreachable", _region_outage, (
        Param("region", "the region to cut", required=True),
        Param("mode", "refuse: connections reset; blackhole: no answer", choices=("refuse", "blackhole"),
              default="refuse"))),
    FaultKind("api-error", "AWS API calls fail with an error code", _api("api_error"), (
        *_SELECT, Param("error", "AWS error code, e.g. ThrottlingException", required=True),
        Param("status", "HTTP status (default: from the code)", int))),
    FaultKind("throttle", "the service's own throttling error", _api("throttle"), _SELECT),
    FaultKind("internal-error", "HTTP 500 internal errors", _api("internal_error"), _SELECT),
    FaultKind("unavailable", "HTTP 503 service unavailable", _api("unavailable"), _SELECT),
    FaultKind("api-latency", "AWS API calls answer late", _api("api_latency"), (
        *_SELECT, Param("ms", "added latency in milliseconds", float, required=True),
        Param("jitter-ms", "+- random jitter in milliseconds", float, default=0.0))),
    FaultKind("pause-replication", "pause DynamoDB global-table replication", _pause_replication, (
        Param("table", "the global table", required=True),
        Param("region", "replica cut off from replication (repeatable; default all)", multiple=True))),
):
    register_fault_kind(_kind)


# -- the client side -----------------------------------------------------------------------------------
def _request(url: str, method: str, path: str, payload: Any = None) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise click.ClickException(str(message)) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot reach `dbdrill up` at {url} ({exc}); is it running? Set "
                                   "DBDRILL_CONTROL_URL to the value it printed.") from exc
    return json.loads(body) if body else None


def _control_url(ctx: click.Context) -> str:
    url: str | None = ctx.obj.get("control_url") if ctx.obj else None
    url = url or os.environ.get("DBDRILL_CONTROL_URL")
    if not url:
        raise click.UsageError("no running `dbdrill up` given: set DBDRILL_CONTROL_URL (printed by `dbdrill up`) "
                               "or pass --control-url")
    return url


def _kind_command(kind: FaultKind) -> click.Command:
    def inject(**values: Any) -> None:
        ctx = click.get_current_context()
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if v not in (None, ())}
        out = _request(_control_url(ctx), "POST", "/faults", {"kind": kind.name, "params": params})
        click.echo(f"{out['id']}\t{out['kind']}\t{out['target']}")

    options = [click.Option([f"--{p.name}"], type=click.Choice(p.choices) if p.choices else p.type,
                            multiple=p.multiple, required=p.required, help=p.help,
                            default=p.default, show_default=p.default is not None) for p in kind.params]
    return click.Command(kind.name, callback=inject, params=list(options), help=kind.help)


class _KindGroup(click.Group):
    """Subcommands for every registered fault kind (plus the group's own commands)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(fault_kinds()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        kind = fault_kinds().get(cmd_name)
        return _kind_command(kind) if kind is not None else None


@click.group(cls=_KindGroup)
@click.option("--control-url", help="control endpoint of `dbdrill up` [env DBDRILL_CONTROL_URL]")
@click.pass_context
def fault(ctx: click.Context, control_url: str | None) -> None:
    """Inject and heal faults on a running `dbdrill up` (kinds: `dbdrill fault kinds`)."""
    ctx.ensure_object(dict)
    ctx.obj["control_url"] = control_url


@fault.group(cls=_KindGroup)
def inject() -> None:
    """Inject a fault: `dbdrill fault inject KIND --option value ...`."""


@fault.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_context
def list_faults(ctx: click.Context, as_json: bool) -> None:
    """Faults active on the running stack."""
    out = _request(_control_url(ctx), "GET", "/faults")["faults"]
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for f in out:
        params = " ".join(f"{k}={v}" for k, v in f["params"].items() if v not in (None, [], ""))
        click.echo(f"{f['id']}\t{f['kind']}\t{f['target']}\t{f['since']}\t{params}")


@fault.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "heal_all", is_flag=True, help="heal every active fault")
@click.pass_context
def heal(ctx: click.Context, ids: tuple[str, ...], heal_all: bool) -> None:
    """Heal faults by id (from `inject` or `list`), or --all."""
    if not ids and not heal_all:
        raise click.UsageError("name fault ids to heal, or pass --all")
    url = _control_url(ctx)
    healed = _request(url, "DELETE", "/faults")["healed"] if heal_all else [
        _request(url, "DELETE", f"/faults/{i}")["healed"] for i in ids]
    click.echo(" ".join(healed) if healed else "nothing to heal")


@fault.command()
def kinds() -> None:
    """Fault kinds that can be injected, with their options."""
    for kind in sorted(fault_kinds().values(), key=lambda k: k.name):
        opts = " ".join(f"--{p.name}{'' if p.required else '?'}{'*' if p.multiple else ''}" for p in kind.params)
        click.echo(f"{kind.name}\t{kind.help}\t{opts}")
