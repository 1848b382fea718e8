"""Route53 health checks really evaluated: a background prober connects to each check's (loopback) target at
the check's interval, applies FailureThreshold, Inverted and Disabled, and feeds failover answers and
``get_health_check_status``."""
from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from harness.dns.records import norm
from harness.errors import HarnessError
from harness.hosts import is_loopback

logger = logging.getLogger(__name__)

# time_profile "fast" divides every interval and timeout by this: a 30 s check probes every second.
FAST_DIVISOR = 30.0
# Probe timeouts in fast mode never drop below this (a loaded 2-core machine must not fail healthy targets).
FAST_TIMEOUT_FLOOR = 0.5
# AWS: TCP checks must connect within 10 s; HTTP(S) within 4 s and answer within 2 s more.
AWS_TCP_TIMEOUT = 10.0
AWS_HTTP_CONNECT = 4.0
AWS_HTTP_RESPONSE = 2.0
BODY_SEARCH_BYTES = 5120
PROBED = ("TCP", "HTTP", "HTTPS", "HTTP_STR_MATCH", "HTTPS_STR_MATCH")
CHECKER_REGION = "us-east-1"


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


@dataclass(frozen=True)
class CheckConfig:
    """A health check's settings, copied out of moto."""

    check_id: str
    type: str
    ip: str | None
    fqdn: str | None
    port: int
    path: str
    search: str | None
    interval: float
    threshold: int
    inverted: bool
    disabled: bool
    children: tuple[str, ...]
    health_threshold: int

    @classmethod
    def from_moto(cls, hc: Any) -> CheckConfig:
        kind = str(hc.type_ or "").upper()
        default_port = 443 if kind.startswith("HTTPS") else 80
        return cls(
            check_id=hc.id, type=kind, ip=hc.ip_address or None, fqdn=norm(hc.fqdn) if hc.fqdn else None,
            port=int(hc.port or default_port), path=hc.resource_path or "/", search=hc.search_string,
            interval=float(hc.request_interval or 30), threshold=max(1, int(hc.failure_threshold or 3)),
            inverted=_truthy(hc.inverted), disabled=_truthy(hc.disabled), children=tuple(hc.children or ()),
            health_threshold=int(hc.health_threshold or 0),
        )


@dataclass(frozen=True)
class CheckStatus:
    """What the prober knows about one check. ``healthy`` is the final status (after threshold, Disabled and
    Inverted); ``passing`` the thresholded endpoint status before Disabled/Inverted."""

    check_id: str
    healthy: bool = True
    passing: bool = True
    successes: int = 0
    failures: int = 0
    probes: int = 0
    report: str = "Unknown: not checked yet"
    checked_at: float | None = None
    target: str | None = None
    forced: bool | None = None


class HealthChecker:
    """Probes every Route53 health check in moto. ``healthy(id)`` is what DNS routing asks; unknown ids are
    healthy. ``resolve(name)`` turns a check's FullyQualifiedDomainName into an address (our own DNS)."""

    def __init__(self, *, lock: Callable[[], Any] | None = None, resolve: Callable[[str], str | None] | None = None,
                 profile: str = "fast", source_host: str | None = None, tick: float = 0.05) -> None:
        if profile not in ("fast", "aws"):
            raise HarnessError(f"unknown time profile {profile!r}: use fast or aws")
        self.profile = profile
        self.divisor = FAST_DIVISOR if profile == "fast" else 1.0
        self.source_host = source_host
        self.tick = tick
        self._moto_lock = lock or contextlib.nullcontext
        self._resolve = resolve or (lambda _name: None)
        self._lock = threading.Lock()
        self._states: dict[str, CheckStatus] = {}
        self._configs: dict[str, CheckConfig] = {}
        self._due: dict[str, float] = {}
        self._inflight: set[str] = set()
        self._refused_logged: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._changed = threading.Condition(self._lock)

    # -- timing ------------------------------------------------------------------------------------------
    def interval(self, cfg: CheckConfig) -> float:
        return cfg.interval / self.divisor

    def timeouts(self, cfg: CheckConfig) -> tuple[float, float]:
        """(connect, response) timeouts for ``cfg``'s probes."""
        if cfg.type == "TCP" or cfg.type.startswith("HTTPS"):
            pair = (AWS_TCP_TIMEOUT, 0.0)
        else:
            pair = (AWS_HTTP_CONNECT, AWS_HTTP_RESPONSE)
        if self.profile == "aws":
            return pair
        return max(FAST_TIMEOUT_FLOOR, pair[0] / self.divisor), max(FAST_TIMEOUT_FLOOR, pair[1] / self.divisor)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> HealthChecker:
        if self._thread is None:
            self._stop.clear()
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dbdrill-healthcheck")
            self._thread = threading.Thread(target=self._run, name="dbdrill-healthchecker", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def reset(self) -> None:
        """Forget every check's state and override (the checks themselves live in moto)."""
        with self._lock:
            self._states.clear()
            self._configs.clear()
            self._due.clear()
            self._refused_logged.clear()

    # -- queries -----------------------------------------------------------------------------------------
    def healthy(self, check_id: str) -> bool:
        with self._lock:
            st = self._states.get(check_id)
        return True if st is None else st.healthy

    def status(self, check_id: str) -> CheckStatus | None:
        with self._lock:
            return self._states.get(check_id)

    def statuses(self) -> dict[str, CheckStatus]:
        with self._lock:
            return dict(self._states)

    def force(self, check_id: str, healthy: bool | None) -> None:
        """Pin a check's status (True/False) whatever its target does, or hand it back to the prober (None)."""
        with self._lock:
            st = self._states.get(check_id) or CheckStatus(check_id)
            self._states[check_id] = self._final(replace(st, forced=healthy), self._configs.get(check_id))
            self._changed.notify_all()

    def unforce_all(self) -> None:
        """Hand every forced check back to the prober."""
        with self._lock:
            for cid, st in list(self._states.items()):
                if st.forced is not None:
                    self._states[cid] = self._final(replace(st, forced=None), self._configs.get(cid))
            self._changed.notify_all()

    def wait(self, check_id: str, healthy: bool, timeout: float = 10.0) -> CheckStatus:
        """Block until ``check_id`` reports ``healthy`` (HarnessError with its last report on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                st = self._states.get(check_id)
                if st is not None and st.healthy == healthy:
                    return st
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"health check {check_id} did not become {'healthy' if healthy else 'unhealthy'}"
                                       f" within {timeout:g}s; last report: {st.report if st else 'none'}")
                self._changed.wait(min(left, 0.1))

    # -- the prober ----------------------------------------------------------------------------------------
    def _read_configs(self) -> dict[str, CheckConfig]:
        try:
            from moto.backends import get_backend
        except ImportError:
            return {}
        out: dict[str, CheckConfig] = {}
        with self._moto_lock():
            backends: Any = get_backend("route53")
            for account in list(dict.values(backends)):
                backend = dict.get(account, "aws")
                if backend is not None:
                    for hc in list(backend.health_checks.values()):
                        out[hc.id] = CheckConfig.from_moto(hc)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self._cycle()
            except Exception:
                logger.exception("health checker cycle failed")

    def _cycle(self) -> None:
        configs = self._read_configs()
        now = time.monotonic()
        due: list[CheckConfig] = []
        with self._lock:
            for gone in set(self._states) - set(configs):
                self._states.pop(gone, None)
                self._due.pop(gone, None)
            for cid, cfg in configs.items():
                old = self._configs.get(cid)
                self._configs[cid] = cfg
                st = self._states.setdefault(cid, CheckStatus(cid))
                if old != cfg:
                    self._due[cid] = now
                    self._states[cid] = self._final(st, cfg)
                if cfg.type == "CALCULATED":
                    self._states[cid] = self._calculated(cfg)
                    continue
                if cfg.disabled or cid in self._inflight or self._due.get(cid, now) > now:
                    continue
                if cfg.type not in PROBED:
                    if (cid, cfg.type) not in self._refused_logged:
                        self._refused_logged.add((cid, cfg.type))
                        logger.warning("health check %s: type %s is not evaluated by dbdrill; it stays healthy",
                                       cid, cfg.type)
                        self._states[cid] = replace(st, report=f"Unknown: dbdrill does not evaluate {cfg.type} "
                                                                "health checks")
                    continue
                self._inflight.add(cid)
                self._due[cid] = now + self.interval(cfg)
                due.append(cfg)
            self._changed.notify_all()
        for cfg in due:
            if self._pool is None:
                return
            self._pool.submit(self._probe_and_record, cfg)

    def _calculated(self, cfg: CheckConfig) -> CheckStatus:
        up = sum(1 for c in cfg.children if (self._states.get(c) or CheckStatus(c)).healthy)
        ok = up >= cfg.health_threshold
        st = self._states.get(cfg.check_id) or CheckStatus(cfg.check_id)
        report = f"{'Success' if ok else 'Failure'}: {up} of {len(cfg.children)} child health checks healthy"
        return self._final(replace(st, passing=ok, report=report, checked_at=time.time()), cfg)

    def _probe_and_record(self, cfg: CheckConfig) -> None:
        try:
            ok, report, target = self.probe(cfg)
        except Exception as exc:
            ok, report, target = False, f"Failure: probe error {exc!r}", None
        with self._lock:
            self._inflight.discard(cfg.check_id)
            if self._configs.get(cfg.check_id) is None:
                return
            st = self._states.get(cfg.check_id) or CheckStatus(cfg.check_id)
            successes, failures = (st.successes + 1, 0) if ok else (0, st.failures + 1)
            passing = st.passing
            if ok and successes >= cfg.threshold:
                passing = True
            elif not ok and failures >= cfg.threshold:
                passing = False
            new = replace(st, successes=successes, failures=failures, passing=passing, probes=st.probes + 1,
                          report=report, checked_at=time.time(), target=target)
            new = self._final(new, self._configs.get(cfg.check_id))
            if new.healthy != st.healthy:
                logger.info("health check %s (%s) is now %s: %s", cfg.check_id, target,
                            "healthy" if new.healthy else "unhealthy", report)
            self._states[cfg.check_id] = new
            self._changed.notify_all()

    @staticmethod
    def _final(st: CheckStatus, cfg: CheckConfig | None) -> CheckStatus:
        if st.forced is not None:
            return replace(st, healthy=st.forced)
        # AWS: a disabled check is always healthy; Inverted then flips it (the documented way to force unhealthy).
        base = True if cfg is not None and cfg.disabled else st.passing
        return replace(st, healthy=(not base) if cfg is not None and cfg.inverted else base)

    def _target(self, cfg: CheckConfig) -> tuple[str | None, str]:
        """(address, why not) for ``cfg``: loopback only, FQDNs through our own DNS."""
        host = cfg.ip
        if host is None and cfg.fqdn:
            host = self._resolve(cfg.fqdn)
            if host is None:
                return None, (f"Failure: {cfg.fqdn} does not resolve through dbdrill's DNS (dbdrill probes only "
                              "names it serves, on loopback)")
        if host is None:
            return None, "Failure: the health check has neither IPAddress nor FullyQualifiedDomainName"
        if not is_loopback(host):
            if (cfg.check_id, host) not in self._refused_logged:
                self._refused_logged.add((cfg.check_id, host))
                logger.warning("health check %s targets %s, which is not loopback: dbdrill never probes outside "
                               "the machine, so it is unhealthy. Point it at a 127.x.y.z address.", cfg.check_id, host)
            return None, f"Failure: dbdrill refuses to probe non-loopback target {host}"
        return host, ""

    def probe(self, cfg: CheckConfig) -> tuple[bool, str, str | None]:
        """One probe: (success, AWS-style status report, target host:port)."""
        host, why = self._target(cfg)
        if host is None:
            return False, why, None
        target = f"{host}:{cfg.port}"
        connect_timeout, response_timeout = self.timeouts(cfg)
        source = (self.source_host, 0) if self.source_host else None
        if cfg.type == "TCP" or cfg.type.startswith("HTTPS"):
            # HTTPS checks: TCP connect only (no TLS handshake), documented.
            try:
                with socket.create_connection((host, cfg.port), timeout=connect_timeout, source_address=source):
                    pass
            except OSError as exc:
                return False, _failure(exc), target
            return True, "Success: TCP connection established.", target
        conn = http.client.HTTPConnection(host, cfg.port, timeout=connect_timeout, source_address=source)
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(response_timeout)
            conn.request("GET", cfg.path, headers={"Host": cfg.fqdn or host, "User-Agent": "Amazon-Route53-Health-"
                                                   "Check-Service (ref dbdrill; report http://amzn.to/1vsZADi)"})
            resp = conn.getresponse()
            body = resp.read(BODY_SEARCH_BYTES) if cfg.type == "HTTP_STR_MATCH" else b""
        except OSError as exc:
            return False, _failure(exc), target
        except http.client.HTTPException as exc:
            return False, f"Failure: Invalid response: {exc!r}", target
        finally:
            conn.close()
        status = f"HTTP Status Code {resp.status}, {resp.reason}"
        if not 200 <= resp.status < 400:
            return False, f"Failure: {status}", target
        if cfg.type == "HTTP_STR_MATCH" and (cfg.search or "").encode() not in body:
            return False, f"Failure: Search string ({cfg.search}) not found in the first {BODY_SEARCH_BYTES} bytes " \
                          "of the response body", target
        return True, f"Success: {status}", target


def _failure(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "Failure: Connection refused. The endpoint is not accepting connections on the port."
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return ("Failure: Connection timed out. The endpoint or the internet connection is down, or requests are "
                "being blocked by your firewall.")
    return f"Failure: {exc.strerror or exc!r}"


# -- get_health_check_status reports the prober --------------------------------------------------------------
_patch_lock = threading.Lock()
_checkers: list[HealthChecker] = []
_original: Any = None


def install_status_patch(checker: HealthChecker) -> None:
    """Make moto's GetHealthCheckStatus answer with ``checker``'s observation (undo with ``uninstall``)."""
    global _original
    from moto.route53.responses import Route53

    with _patch_lock:
        _checkers.append(checker)
        if _original is None:
            _original = Route53.get_health_check_status
            Route53.get_health_check_status = _patched_status  # type: ignore[method-assign]


def uninstall_status_patch(checker: HealthChecker) -> None:
    global _original
    from moto.route53.responses import Route53

    with _patch_lock:
        if checker in _checkers:
            _checkers.remove(checker)
        if not _checkers and _original is not None:
            Route53.get_health_check_status = _original  # type: ignore[method-assign]
            _original = None


def _patched_status(self: Any) -> Any:
    from moto.core.responses import ActionResult

    check_id = self._get_param("HealthCheckId")
    self.backend.get_health_check(check_id)
    with _patch_lock:
        checker = _checkers[-1] if _checkers else None
        original = _original
    st = checker.status(check_id) if checker is not None else None
    if checker is None or st is None:
        return original(self)
    checked = dt.datetime.fromtimestamp(st.checked_at or time.time(), dt.UTC).replace(tzinfo=None)
    return ActionResult({"HealthCheckObservations": [{
        "Region": CHECKER_REGION, "IPAddress": checker.source_host or "127.0.0.1",
        "StatusReport": {"Status": st.report, "CheckedTime": checked},
    }]})
