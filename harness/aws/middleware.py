"""The request pipeline in front of moto: region cuts (refuse / blackhole by the signature's region), API fault
rules (errors and latency by service, region, operation, probability), service behaviours (DynamoDB capacity...)
and moto itself under the shared lock, with unimplemented actions answered as a clear error."""
from __future__ import annotations

import io
import itertools
import logging
import random
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from harness.aws.server import CloseConnection, HttpRequest, HttpResponse
from harness.aws.wire import (
    KNOWN_CODES,
    RequestInfo,
    ServiceSpec,
    UnknownServiceError,
    error_response,
    guess_protocol,
    identify,
    internal_code,
    service_spec,
    throttle_code,
    unavailable_code,
)
from harness.errors import HarnessError

logger = logging.getLogger(__name__)

RULE_KINDS = ("error", "throttle", "internal", "unavailable", "latency")


@dataclass
class FaultRule:
    """One API fault: requests of ``service`` (botocore name), optionally only these operations / regions,
    fail with ``code``/``status`` or are delayed by ``latency`` s (+- ``jitter``), each with ``probability``."""

    service: str
    kind: str
    spec: ServiceSpec
    operations: frozenset[str] | None = None
    regions: frozenset[str] | None = None
    code: str = ""
    status: int = 400
    message: str = ""
    latency: float = 0.0
    jitter: float = 0.0
    probability: float = 1.0
    id: str = ""
    matched: int = 0
    hits: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "service": self.service, "kind": self.kind,
                "operations": sorted(self.operations) if self.operations else None,
                "regions": sorted(self.regions) if self.regions else None, "code": self.code or None,
                "status": self.status if self.kind != "latency" else None,
                "latency": self.latency if self.kind == "latency" else None,
                "probability": self.probability, "matched": self.matched, "hits": self.hits}


def make_rule(service: str, kind: str = "error", *, operations: Iterable[str] | str | None = None,
              regions: Iterable[str] | str | None = None, known_regions: Iterable[str] | None = None,
              code: str | None = None, status: int | None = None, message: str | None = None,
              latency: float = 0.0, jitter: float = 0.0, probability: float = 1.0,
              seed: int | None = None) -> FaultRule:
    """A validated rule; HarnessError (saying what to fix) for an unknown service / operation / region,
    a probability outside [0, 1], a negative latency or an unknown kind."""
    if kind not in RULE_KINDS:
        raise HarnessError(f"unknown fault rule kind {kind!r}; use one of {', '.join(RULE_KINDS)}")
    if not isinstance(probability, int | float) or not 0.0 <= float(probability) <= 1.0:
        raise HarnessError(f"probability must be within [0, 1], got {probability!r}")
    if latency < 0 or jitter < 0:
        raise HarnessError(f"latency and jitter must be >= 0 seconds, got {latency!r} / {jitter!r}")
    try:
        spec = service_spec(service)
        ops = None
        if operations is not None:
            names = [operations] if isinstance(operations, str) else list(operations)
            ops = frozenset(spec.canonical_operation(o) for o in names)
    except UnknownServiceError as exc:
        raise HarnessError(str(exc)) from exc
    regs = None
    if regions is not None:
        regs = frozenset([regions] if isinstance(regions, str) else regions)
        if known_regions is not None:
            unknown = sorted(regs - set(known_regions))
            if unknown:
                raise HarnessError(f"unknown region(s) {', '.join(unknown)}: the emulator serves "
                                   f"{', '.join(known_regions)} (setting --dbdrill-regions)")
    op_for_default = next(iter(ops)) if ops and len(ops) == 1 else None
    if kind == "throttle":
        dcode, dstatus = throttle_code(spec, op_for_default)
    elif kind == "internal":
        dcode, dstatus = internal_code(spec)
    elif kind == "unavailable":
        dcode, dstatus = unavailable_code(spec)
    elif kind == "error":
        if not code:
            raise HarnessError("an error rule needs an error code, e.g. error='ThrottlingException'")
        dcode, dstatus = code, KNOWN_CODES.get(code, 500 if "Internal" in code or "Unavailable" in code else 400)
    else:
        dcode, dstatus = "", 0
    final_status = status if status is not None else dstatus
    if kind != "latency" and not 400 <= final_status <= 599:
        raise HarnessError(f"an error status must be 4xx or 5xx, got {final_status}")
    return FaultRule(service=spec.name, kind=kind, spec=spec, operations=ops, regions=regs,
                     code=code or dcode, status=final_status,
                     message=message or f"Injected fault: {code or dcode} (dbdrill)", latency=latency,
                     jitter=jitter, probability=float(probability), rng=random.Random(seed))


class Interceptor(Protocol):
    """A service behaviour wrapped around moto (DynamoDB capacity, TTL rules...)."""

    def applies(self, info: RequestInfo) -> bool: ...

    def __call__(self, call: Call) -> HttpResponse: ...


@dataclass
class Call:
    """One request on its way to moto; ``forward`` runs moto (under the lock), optionally with a new body."""

    request: HttpRequest
    info: RequestInfo
    app: AwsApp

    def forward(self, body: bytes | None = None) -> HttpResponse:
        return self.app.call_moto(self.request, self.info, body)


@dataclass
class _Cut:
    region: str
    mode: str


class AwsApp:
    """The handler the HTTP server calls for every request."""

    def __init__(self, moto_app: Callable[..., Iterable[bytes]], lock: threading.RLock,
                 stopping: threading.Event | None = None) -> None:
        self.moto_app = moto_app
        self.lock = lock
        self.stopping = stopping or threading.Event()
        self.interceptors: list[Interceptor] = []
        self._rules: dict[str, FaultRule] = {}
        self._rules_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._cuts: dict[int, _Cut] = {}
        self._cut_cond = threading.Condition()
        self.requests = 0

    # -- fault rules -------------------------------------------------------------------------------
    def add_rule(self, rule: FaultRule) -> str:
        with self._rules_lock:
            rule.id = rule.id or f"rule-{next(self._ids)}"
            self._rules[rule.id] = rule
        logger.info("API fault rule %s added: %s", rule.id, rule.describe())
        return rule.id

    def remove_rule(self, rule_id: str) -> FaultRule | None:
        with self._rules_lock:
            return self._rules.pop(rule_id, None)

    def rules(self) -> list[FaultRule]:
        with self._rules_lock:
            return list(self._rules.values())

    def clear_rules(self) -> None:
        with self._rules_lock:
            self._rules.clear()

    # -- region cuts ---------------------------------------------------------------------------------
    def cut_region(self, region: str, mode: str) -> int:
        """Cut every request signed for ``region``: "refuse" resets the connection, "blackhole" holds the
        request unanswered until healed. Returns a token for ``heal_cut``."""
        if mode not in ("refuse", "blackhole"):
            raise HarnessError(f"region cut mode must be 'refuse' or 'blackhole', got {mode!r}")
        with self._cut_cond:
            token = next(self._ids)
            self._cuts[token] = _Cut(region, mode)
            return token

    def heal_cut(self, token: int) -> None:
        with self._cut_cond:
            self._cuts.pop(token, None)
            self._cut_cond.notify_all()

    def clear_cuts(self) -> None:
        with self._cut_cond:
            self._cuts.clear()
            self._cut_cond.notify_all()

    def cut_mode(self, region: str | None) -> str | None:
        """"refuse", "blackhole" or None (region reachable)."""
        if region is None:
            return None
        with self._cut_cond:
            modes = {c.mode for c in self._cuts.values() if c.region == region}
        if not modes:
            return None
        return "refuse" if "refuse" in modes else "blackhole"

    def _apply_cut(self, region: str | None) -> None:
        mode = self.cut_mode(region)
        if mode is None:
            return
        if mode == "refuse":
            raise CloseConnection(rst=True)
        # Held like a packet that never arrives; when the cut heals the connection is closed, as a proxy's
        # blackhole does when its timeout toxic goes away.
        with self._cut_cond:
            for _ in range(100_000_000):
                if self.cut_mode(region) != "blackhole" or self.stopping.is_set():
                    break
                self._cut_cond.wait(0.25)
        raise CloseConnection(rst=False)

    # -- the pipeline ----------------------------------------------------------------------------------
    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests += 1
        info = identify(request)
        if self._cuts:
            self._apply_cut(info.region)
        if self._rules:
            response = self._apply_rules(request, info)
            if response is not None:
                return response
        call = Call(request, info, self)
        for interceptor in self.interceptors:
            if interceptor.applies(info):
                return interceptor(call)
        return call.forward()

    def _apply_rules(self, request: HttpRequest, info: RequestInfo) -> HttpResponse | None:
        delay = 0.0
        failing: FaultRule | None = None
        for rule in self.rules():
            if not rule.spec.matches(info):
                continue
            if rule.regions is not None and info.region not in rule.regions:
                continue
            if rule.operations is not None and rule.spec.operation_of(info, request) not in rule.operations:
                continue
            rule.matched += 1
            if rule.probability < 1.0 and rule.rng.random() >= rule.probability:
                continue
            if rule.kind == "latency":
                rule.hits += 1
                delay += max(0.0, rule.latency + rule.rng.uniform(-rule.jitter, rule.jitter))
            elif failing is None:
                rule.hits += 1
                failing = rule
        if delay > 0:
            self.stopping.wait(delay)
        if failing is None:
            return None
        return error_response(failing.spec.protocol, failing.code, failing.message, failing.status,
                              spec=failing.spec)

    # -- moto ------------------------------------------------------------------------------------------
    def call_moto(self, request: HttpRequest, info: RequestInfo, body: bytes | None = None) -> HttpResponse:
        environ = _environ(request, request.body if body is None else body)
        status_headers: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            status_headers[:] = [status, headers]

        try:
            with self.lock:
                chunks = self.moto_app(environ, start_response)
                payload = b"".join(chunks)
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        except NotImplementedError as exc:
            return self._not_implemented(request, info, str(exc))
        except Exception as exc:
            logger.exception("moto failed on %s %s", request.method, request.path)
            return error_response(guess_protocol(info, request), "InternalFailure",
                                  f"dbdrill: the emulator (moto) failed: {type(exc).__name__}: {exc}", 500,
                                  signing_name=info.signing_name)
        status = int(status_headers[0].split(" ", 1)[0])
        # The server sets Content-Length from the body we send, which a behaviour may have rewritten.
        headers = [(k, v) for k, v in status_headers[1] if request.method == "HEAD" or k.lower() != "content-length"]
        response = HttpResponse(status, headers, payload)
        if status == 404 and (response.header("Content-Type") or "").startswith("text/html"):
            return self._not_implemented(request, info, None)
        return response

    def _not_implemented(self, request: HttpRequest, info: RequestInfo, detail: str | None) -> HttpResponse:
        protocol = guess_protocol(info, request)
        op = info.operation
        if op is None and info.signing_name:
            try:
                spec = service_spec(info.signing_name)
                op = spec.operation_of(info, request)
            except UnknownServiceError:
                op = None
        what = f"{info.signing_name or 'unknown service'} {op or f'{request.method} {request.path}'}"
        message = (f"dbdrill: the emulator (moto) does not implement {what}"
                   f"{f' ({detail})' if detail else ''}. Not retryable; use another API or a fault rule.")
        logger.warning("%s", message)
        return error_response(protocol, "NotImplemented", message, 400, signing_name=info.signing_name)


def _environ(request: HttpRequest, body: bytes) -> dict[str, Any]:
    host = request.header("host") or f"{request.server[0]}:{request.server[1]}"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(request.path).decode("latin-1"),
        "QUERY_STRING": request.query,
        "RAW_URI": request.target,
        "REQUEST_URI": request.target,
        "SERVER_NAME": request.server[0],
        "SERVER_PORT": str(request.server[1]),
        "SERVER_PROTOCOL": request.version,
        "REMOTE_ADDR": request.client[0],
        "REMOTE_PORT": str(request.client[1]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    preserved: dict[str, str] = {}
    for name, value in request.headers:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING", "EXPECT"):
            continue
        if key != "CONTENT_TYPE":
            key = f"HTTP_{key}"
        if "_" in name and name.lower().startswith("x-amz-meta-"):
            preserved[key] = name
        environ[key] = f"{environ[key]},{value}" if key in environ and key.startswith("HTTP_") else value
    environ["HTTP_HOST"] = host
    environ["moto.preserved_header_names"] = preserved
    environ["dbdrill.headers"] = {name: value for name, value in request.headers}
    return environ


