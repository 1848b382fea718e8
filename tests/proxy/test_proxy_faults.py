"""Network faults: each one seen by a real client while active and gone after heal; bad parameters refused
before anything changes; healing removes exactly the toxics the fault added."""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from proxykit import BlobServer, EchoServer, closed_by_peer, connect, read_all, recv_exact, refused, round_trip

from faults import network
from faults.base import FaultError, Timeline, recording
from harness.toxiproxy import ToxiproxyClient, current_default, set_default_client


def test_latency_fault_while_active_only(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    listen = echo_proxy["listen"]
    with recording(Timeline()) as timeline, network.latency("echo", 120, client=client):
        assert 0.12 <= round_trip(listen) < 0.5
    assert round_trip(listen) < 0.1
    assert client.toxics("echo") == []
    [event] = timeline.events
    assert event.kind == "network-latency" and event.target == "echo" and event.params["latency"] == 120
    assert event.end is not None


def test_latency_both_streams_and_decorator(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    fault = network.latency("echo", 50, stream="both", client=client)

    @fault
    def measure() -> float:
        assert {t["stream"] for t in client.toxics("echo")} == {"upstream", "downstream"}
        return round_trip(echo_proxy["listen"])

    assert measure() >= 0.1
    assert client.toxics("echo") == []


def test_partition_refuses_and_drops_then_heals_on_the_same_port(client: ToxiproxyClient,
                                                                 echo_proxy: dict[str, Any]) -> None:
    listen = echo_proxy["listen"]
    with connect(listen) as sock:
        sock.sendall(b"a")
        recv_exact(sock, 1)
        with network.partition("echo", client=client):
            assert closed_by_peer(sock)
            assert refused(listen)
    assert client.get_proxy("echo")["listen"] == listen
    assert round_trip(listen) < 0.1


def test_partition_leaves_a_proxy_that_was_already_down_down(client: ToxiproxyClient,
                                                              echo_proxy: dict[str, Any]) -> None:
    client.update_proxy("echo", enabled=False)
    with network.partition("echo", client=client):
        pass
    assert client.get_proxy("echo")["enabled"] is False


def test_blackhole_accepts_and_never_answers(client: ToxiproxyClient, echo: EchoServer,
                                             echo_proxy: dict[str, Any]) -> None:
    listen = echo_proxy["listen"]
    with network.blackhole("echo", client=client):
        sock = connect(listen)
        sock.sendall(b"anyone?")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert bytes(echo.received) == b""
    sock.settimeout(5)
    with sock:
        assert closed_by_peer(sock)  # healing ends the swallowed connection, as Toxiproxy does
    assert round_trip(listen) < 0.1


def test_bandwidth_fault(client: ToxiproxyClient, blob: Callable[[bytes], BlobServer]) -> None:
    server = blob(b"z" * 50_000)
    listen = client.create_proxy("bw", "127.0.0.1:0", server.address)["listen"]
    with network.bandwidth("bw", 100, client=client):  # 50 KB at 100 KB/s
        t0 = time.perf_counter()
        with connect(listen) as sock:
            data, _ = read_all(sock)
        assert len(data) == 50_000 and 0.45 <= time.perf_counter() - t0 < 1.5
    t0 = time.perf_counter()
    with connect(listen) as sock:
        read_all(sock)
    assert time.perf_counter() - t0 < 0.2


def test_reset_peer_fault(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    with network.reset_peer("echo", client=client), connect(echo_proxy["listen"]) as sock:
        sock.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            while sock.recv(10):
                pass
    assert round_trip(echo_proxy["listen"]) < 0.1


def test_timeout_limit_slicer_slow_close_and_generic_toxic(client: ToxiproxyClient, echo_proxy: dict[str, Any],
                                                           blob: Callable[[bytes], BlobServer]) -> None:
    with network.timeout("echo", 150, client=client), connect(echo_proxy["listen"]) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"x")
        assert closed_by_peer(sock)  # the answer swallowed, the connection closed 150 ms after it
        assert time.perf_counter() - t0 >= 0.15

    payload = bytes(range(256)) * 20
    server = blob(payload)
    listen = client.create_proxy("blob", "127.0.0.1:0", server.address)["listen"]
    with network.limit_data("blob", 700, client=client), connect(listen) as sock:
        assert read_all(sock)[0] == payload[:700]
    with network.slicer("blob", 64, 16, delay_us=500, client=client), connect(listen) as sock:
        data, reads = read_all(sock)
        assert data == payload and len(reads) >= 10
    with network.slow_close("blob", 200, client=client), connect(listen) as sock:
        recv_exact(sock, len(payload))
        t0 = time.perf_counter()
        assert sock.recv(10) == b""
        assert time.perf_counter() - t0 >= 0.15
    with network.toxic("blob", "limit_data", bytes=10, client=client), connect(listen) as sock:
        assert read_all(sock)[0] == payload[:10]
    with connect(listen) as sock:
        assert read_all(sock)[0] == payload
    assert client.toxics("blob") == []


@pytest.mark.parametrize(("make", "message"), [
    (lambda c: network.latency("echo", -5, client=c), "ms must be >= 0 (milliseconds), got -5"),
    (lambda c: network.latency("echo", 1.5, client=c), "ms must be a whole number of milliseconds, got 1.5"),
    (lambda c: network.latency("echo", 10, stream="sideways", client=c),
     "stream must be one of upstream, downstream, both, got 'sideways'"),
    (lambda c: network.bandwidth("echo", 0, client=c), "kbps must be > 0 (KB/s), got 0"),
    (lambda c: network.slicer("echo", 0, client=c), "average_size must be > 0 (bytes), got 0"),
    (lambda c: network.slicer("echo", 10, 10, client=c), "size_variation (10) must be smaller than average_size"),
    (lambda c: network.limit_data("echo", -1, client=c), "nbytes must be >= 0 (bytes), got -1"),
    (lambda c: network.toxic("echo", "warp", client=c), "unknown toxic type 'warp'; known: bandwidth"),
    (lambda c: network.toxic("echo", "latency", latancy=3, client=c), "unknown attribute 'latancy' for latency"),
    (lambda c: network.latency("echo", 10, toxicity=2, client=c), "invalid toxicity 2"),
    (lambda c: network.latency([], 10, client=c), "give a proxy name or a list of proxy names"),
])
def test_bad_parameters_are_refused_before_anything_changes(client: ToxiproxyClient, echo_proxy: dict[str, Any],
                                                            make: Callable[[ToxiproxyClient], Any],
                                                            message: str) -> None:
    with pytest.raises(FaultError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(client)
    assert client.toxics("echo") == []


def test_unknown_proxy_fails_before_touching_the_others(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    fault = network.latency(["echo", "nope"], 10, client=client)
    with pytest.raises(FaultError, match=r"no proxy named 'nope' \(known: echo\)"):
        fault.start()
    assert client.toxics("echo") == [] and not fault.active
    with pytest.raises(FaultError, match="no proxy named 'nope'"):
        network.partition(["echo", "nope"], client=client).start()
    assert client.get_proxy("echo")["enabled"] is True


def test_heal_removes_exactly_its_own_toxics(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "latency", {"latency": 1}, name="users-own")
    first = network.latency("echo", 10, client=client).start()
    second = network.latency("echo", 20, client=client).start()
    assert len(client.toxics("echo")) == 3
    first.stop()
    names = [t["name"] for t in client.toxics("echo")]
    assert names[0] == "users-own" and len(names) == 2 and names[1].startswith("dbdrill-network-latency-")
    assert client.toxics("echo")[1]["attributes"]["latency"] == 20
    second.stop()
    assert [t["name"] for t in client.toxics("echo")] == ["users-own"]


def test_nested_use_heals_once_at_the_outermost_exit(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    fault = network.latency("echo", 10, client=client)
    with fault:
        with fault:
            assert len(client.toxics("echo")) == 1
        assert len(client.toxics("echo")) == 1
    assert client.toxics("echo") == []


def test_a_proxy_deleted_during_the_fault_still_heals(client: ToxiproxyClient, echo: EchoServer) -> None:
    client.create_proxy("gone", "127.0.0.1:0", echo.address)
    fault = network.latency("gone", 10, client=client).start()
    part = network.partition("gone", client=client).start()
    client.delete_proxy("gone")
    part.stop()
    fault.stop()
    assert not fault.active and not part.active


def test_faults_use_the_default_client(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    previous = current_default()
    set_default_client(client)
    try:
        with network.latency("echo", 30):
            assert len(client.toxics("echo")) == 1
    finally:
        set_default_client(previous)
    set_default_client(None)
    try:
        with pytest.raises(FaultError, match="no Toxiproxy client"):
            network.latency("echo", 30).start()
    finally:
        set_default_client(previous)


def test_reset_peer_on_connect_refused_proxy_is_reported(client: ToxiproxyClient) -> None:
    """A fault on a proxy whose upstream is down still injects; the client sees the upstream refusal."""
    sock = socket.create_server(("127.0.0.1", 0))
    dead = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    listen = client.create_proxy("dead", "127.0.0.1:0", dead)["listen"]
    with network.latency("dead", 10, client=client), connect(listen) as conn:
        assert closed_by_peer(conn)


def test_slow_connect_fault(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    with network.slow_connect("echo", 150, client=client):
        assert 0.15 <= round_trip(echo_proxy["listen"]) < 1.0
    assert round_trip(echo_proxy["listen"]) < 0.1


def test_drop_fault(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    with pytest.raises(FaultError, match="percent must be between 0 and 100"):
        network.drop("echo", 101)
    with network.drop("echo", 100, rto_ms=10, client=client):
        assert round_trip(echo_proxy["listen"]) >= 0.01 * 63  # lost 6 times: 10+20+...+320 ms
    assert round_trip(echo_proxy["listen"]) < 0.1
