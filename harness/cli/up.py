"""``dbdrill up``: run the embedded stack in the foreground for game days and local development. Prints the
``export`` lines another shell needs, serves a small control endpoint for ``dbdrill fault``, and stops
everything on Ctrl-C or SIGTERM.

Control endpoint (JSON over HTTP on loopback): ``GET /health``; ``GET /env``; ``GET /kinds``; ``GET /faults``;
``POST /faults {"kind": "region-outage", "params": {"region": "us-east-1"}}`` -> 201 ``{"id", ...}``;
``DELETE /faults/ID``; ``DELETE /faults`` (heal all). Errors: ``{"error": "..."}`` with 400 / 404 / 500."""
from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import shlex
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from faults.base import Fault, FaultError, Timeline, recording
from harness.aws.server import HttpRequest, HttpResponse, HttpServer
from harness.cli.fault import build_fault, fault_kinds
from harness.config import load_settings
from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:
    from harness.stack import Stack

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Component:
    """Something `up` starts: ``start(stack)`` returns the environment variables it exports."""

    name: str
    help: str
    start: Callable[[Stack], dict[str, str]]
    default: bool = False


COMPONENTS: dict[str, Component] = {}


def register_component(component: Component) -> None:
    """Add a component (e.g. DNS: ``Component("dns", "...", lambda stack: dns_exports(stack.dns))``)."""
    COMPONENTS[component.name] = component


def _start_aws(stack: Stack) -> dict[str, str]:
    aws = stack.aws
    out = aws.env()
    out["DBDRILL_TOXIPROXY_URL"] = stack.toxiproxy.url
    return out


def _start_dns(stack: Stack) -> dict[str, str]:
    from harness.dns.server import dns_exports

    return dns_exports(stack.dns)


def _start_rds(stack: Stack) -> dict[str, str]:
    stack.rds  # noqa: B018 - starting it is the point: RDS API calls now run real PostgreSQL
    return {}


register_component(Component("aws", "emulated AWS endpoint, one proxied address per region", _start_aws,
                             default=True))
register_component(Component("dns", "DNS server answering Route53 zones and emulated endpoint names", _start_dns,
                             default=True))
register_component(Component("rds", "RDS API calls run real PostgreSQL (and PgBouncer) behind fault proxies",
                             _start_rds, default=True))


def _json(status: int, payload: Any) -> HttpResponse:
    return HttpResponse(status, [("Content-Type", "application/json")], json.dumps(payload).encode())


class ControlServer:
    """Builds, injects and heals faults for ``dbdrill fault`` on behalf of the running stack."""

    def __init__(self, stack: Stack, exports: dict[str, str]) -> None:
        self.stack = stack
        self.exports = exports
        self.timeline = Timeline()
        self._faults: dict[str, tuple[Fault, str, dict[str, Any], str]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server: HttpServer | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> ControlServer:
        self.server = HttpServer(self.handle, host, port, name="dbdrill-control").start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.heal_all()

    def heal_all(self) -> list[str]:
        with self._lock:
            items, self._faults = list(self._faults.items()), {}
        for _, (fault, *_rest) in reversed(items):
            try:
                fault.heal()
            except Exception:
                logger.exception("healing %s failed", fault)
        return [i for i, _ in items]

    def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            return self._route(request)
        except (FaultError, HarnessError) as exc:
            return _json(400, {"error": str(exc)})
        except Exception as exc:
            logger.exception("control request failed")
            return _json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _route(self, request: HttpRequest) -> HttpResponse:
        path, method = request.path.rstrip("/") or "/", request.method
        if method == "GET" and path == "/health":
            return _json(200, {"ok": True})
        if method == "GET" and path == "/env":
            return _json(200, self.exports)
        if method == "GET" and path == "/kinds":
            return _json(200, {"kinds": [k.describe() for k in fault_kinds().values()]})
        if method == "GET" and path == "/faults":
            with self._lock:
                return _json(200, {"faults": [self._describe(i, *v) for i, v in self._faults.items()]})
        if method == "POST" and path == "/faults":
            return self._inject(request)
        if method == "DELETE" and path == "/faults":
            return _json(200, {"healed": self.heal_all()})
        if method == "DELETE" and path.startswith("/faults/"):
            fid = path.rsplit("/", 1)[1]
            with self._lock:
                entry = self._faults.pop(fid, None)
            if entry is None:
                return _json(404, {"error": f"no active fault {fid!r} (see `dbdrill fault list`)"})
            entry[0].heal()
            return _json(200, {"healed": fid})
        return _json(404, {"error": f"no such endpoint: {method} {path}"})

    def _inject(self, request: HttpRequest) -> HttpResponse:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError as exc:
            return _json(400, {"error": f"bad request body: {exc}"})
        kind, params = body.get("kind"), body.get("params") or {}
        if not isinstance(kind, str) or not isinstance(params, dict):
            return _json(400, {"error": 'expected {"kind": NAME, "params": {...}}'})
        fault = build_fault(self.stack, kind, params)
        with recording(self.timeline):
            fault.start()
        fid = f"f{next(self._ids)}"
        since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self._lock:
            self._faults[fid] = (fault, kind, params, since)
        logger.info("fault %s injected: %s %s", fid, kind, params)
        return _json(201, self._describe(fid, fault, kind, params, since))

    @staticmethod
    def _describe(fid: str, fault: Fault, kind: str, params: dict[str, Any], since: str) -> dict[str, Any]:
        return {"id": fid, "kind": kind, "target": fault.target_label(), "params": params, "since": since,
                "details": fault.describe()}


@click.command()
@click.option("--regions", help="emulated AWS regions, comma separated [default: settings]")
@click.option("--time-profile", type=click.Choice(["fast", "aws"]), help="fast or AWS-realistic timings")
@click.option("--toxiproxy-url", help="use this external Toxiproxy server instead of the embedded one")
@click.option("-c", "--component", "components", multiple=True,
              help="component to start (repeatable; default: " + ", ".join(
                  n for n, c in COMPONENTS.items() if c.default) + ")")
@click.option("--control-port", type=int, default=0, show_default=True, help="port of the control endpoint")
def up(regions: str | None, time_profile: str | None, toxiproxy_url: str | None, components: tuple[str, ...],
       control_port: int) -> None:
    """Run the embedded stack until Ctrl-C / SIGTERM. Paste the printed lines into another shell."""
    from harness.aws.endpoint import ENV_UNSET
    from harness.stack import Stack

    try:
        settings = load_settings(cli={"regions": regions, "time_profile": time_profile,
                                      "toxiproxy_url": toxiproxy_url})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    names = list(components) or [n for n, c in COMPONENTS.items() if c.default]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise click.UsageError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(settings)
    control: ControlServer | None = None
    try:
        exports: dict[str, str] = {}
        for name in names:
            exports.update(COMPONENTS[name].start(stack))
        control = ControlServer(stack, exports).start(port=control_port)
        exports["DBDRILL_CONTROL_URL"] = control.url
        click.echo(f"unset {' '.join(ENV_UNSET)}")
        for key, value in exports.items():
            click.echo(f"export {key}={shlex.quote(value)}")
        click.echo(f"# dbdrill up: ready ({', '.join(names)}); Ctrl-C or SIGTERM stops it", nl=True)
        while not stop.wait(0.5):
            pass
    finally:
        if control is not None:
            control.stop()
        stack.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        click.echo("# dbdrill up: stopped", err=True)
