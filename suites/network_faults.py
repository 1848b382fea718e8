"""Drill: latency, then a partition, in front of any TCP endpoint. The client must see the latency, fail
fast (not hang) while partitioned, and recover once healed.

Point it at your service by overriding two fixtures in your conftest.py::

    @pytest.fixture
    def network_drill_upstream():
        return "127.0.0.1:6379"            # the endpoint the fault proxy fronts

    @pytest.fixture
    def network_drill_probe():
        def probe(host, port):             # one request of your client through the proxy
            return my_client(host, port).ping()
        return probe
"""
from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from faults.network import latency, partition
from faults.schedule import Nemesis, Step
from harness.wait import wait_until
from suites.history import percentile
from suites.results import CheckResult, Violation
from suites.thresholds import SECONDS, Thresholds, _limit, register
from suites.workload import Workload

pytestmark = pytest.mark.dbdrill_drill("network_faults", kind="network")

LATENCY_MS = 150
PHASE_S = 1.2


@register
@dataclass(frozen=True)
class NetworkThresholds(Thresholds):
    """Latency + partition drill: recovery within a second of the heal; nothing hangs."""

    drill_kind: ClassVar[str] = "network"
    max_rto: float | None = _limit(SECONDS, PHASE_S + 1.5, "fault start -> first successful probe, per fault")
    max_probe_latency: float | None = _limit(SECONDS, 1.5, "slowest single probe (a hang is a failure)")


@contextlib.contextmanager
def echo_server(host: str) -> Iterator[str]:
    """A TCP echo server on ``host`` (the default endpoint under test): yields HOST:PORT."""
    server = _EchoServer((host, 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    bound_host, port = server.socket.getsockname()[:2]
    try:
        yield f"{bound_host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoClient:
    """Keeps one connection per thread, as a pooled client would; reconnects after an error."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, host: str, port: int) -> bytes:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        try:
            if sock is None:
                sock = self._local.sock = socket.create_connection((host, port), timeout=1.0)
            sock.sendall(b"ping\n")
            data = sock.recv(64)
            if not data:
                raise ConnectionResetError("connection closed by the peer")
            return data
        except OSError:
            if sock is not None:
                sock.close()
            self._local.sock = None
            raise


def test_network_faults(drill: Any, proxies: Any, network_drill_upstream: str,
                        network_drill_probe: Callable[[str, int], Any]) -> None:
    proxy = proxies.create("network-drill", upstream=network_drill_upstream)
    history = drill.history
    history.fail_on = (ConnectionRefusedError, ConnectionResetError, BrokenPipeError)

    def probe(process: int, i: int) -> None:
        with history.op(process, "write", value=(process, i), endpoint=proxy.listen):
            network_drill_probe(proxy.listen_host, proxy.listen_port)

    steps = [Step(PHASE_S, PHASE_S, latency(proxy.name, LATENCY_MS, stream="downstream"), name="latency"),
             Step(3 * PHASE_S, PHASE_S, partition(proxy.name), name="partition")]
    with drill.progress(), Workload(probe, threads=2, interval=0.02, max_time=30):
        nemesis = Nemesis(steps, max_time=30).start()
        assert nemesis.wait(30), "the fault schedule did not finish"
        nemesis.stop()
        nemesis.check()
        drill.schedule = nemesis.schedule()
        # Keep probing after the last heal, so recovery is in the history.
        wait_for_ok(history, since=time.monotonic(), timeout=10)
    drill.finish(extra_results=[latency_seen(drill)], checks=["recovery", "availability"])


def wait_for_ok(history: Any, since: float, timeout: float, count: int = 10) -> None:
    wait_until(lambda: sum(1 for o in history.operations() if o.ok and o.invoke_time >= since) >= count, timeout,
               interval=0.05, what="probes to succeed after the last heal")


def latency_seen(drill: Any) -> CheckResult:
    """The client saw the injected latency (proof the fault reached it) and no probe hung."""
    lat = next((e for e in drill.timeline.to_list() if e["kind"] == "network-latency"), None)
    ops = [o for o in drill.history.operations() if o.ok and o.latency is not None and o.complete_time is not None]
    start, end = (lat["start_mono"], lat["end_mono"]) if lat else (float("inf"), float("-inf"))
    inside = [o.latency for o in ops if start <= o.invoke_time and o.complete_time <= end]
    outside = [o.latency for o in ops if o.complete_time < start or o.invoke_time > end]
    p50_in, p50_out = percentile(inside, 50), percentile(outside, 50)
    slowest = max((o.latency for o in ops), default=0.0)
    limit = drill.thresholds.max_probe_latency
    violations = []
    if not inside or p50_in is None or p50_in < 0.9 * LATENCY_MS / 1000:
        violations.append(Violation("latency-not-seen", f"p50 inside the latency window {p50_in} s, expected >= "
                                    f"{0.9 * LATENCY_MS / 1000} s"))
    if limit is not None and slowest > limit:
        violations.append(Violation("hang", f"slowest probe took {slowest:.3f} s (limit {limit} s)"))
    return CheckResult("latency-seen", not violations,
                       f"p50 {fmt(p50_out)} outside vs {fmt(p50_in)} inside the {LATENCY_MS} ms window; "
                       f"slowest {slowest:.3f} s", violations,
                       {"p50_outside_s": p50_out, "p50_inside_s": p50_in, "slowest_s": slowest,
                        "injected_ms": LATENCY_MS})


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.1f} ms"
