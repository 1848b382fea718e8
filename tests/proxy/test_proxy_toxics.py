"""Every toxic over real loopback sockets, with Toxiproxy's semantics: what a client measures and sees, per
stream, per connection (toxicity), and while toxics change under open connections."""
from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from proxykit import (
    BlobServer,
    EchoServer,
    closed_by_peer,
    connect,
    read_all,
    recv_exact,
    refused,
    round_trip,
    wait_refused,
)

from harness.toxiproxy import ToxiproxyClient
from harness.wait import wait_until


def test_latency_delays_each_round_trip(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    listen = echo_proxy["listen"]
    assert round_trip(listen) < 0.05
    client.add_toxic("echo", "latency", {"latency": 100})
    samples = [round_trip(listen) for _ in range(3)]
    assert all(0.100 <= s < 0.4 for s in samples), samples


def test_latency_upstream_and_downstream_add_up(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "latency", {"latency": 60}, stream="upstream")
    client.add_toxic("echo", "latency", {"latency": 40}, stream="downstream")
    assert 0.100 <= round_trip(echo_proxy["listen"]) < 0.4


def test_chained_latencies_add_up(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "latency", {"latency": 50}, name="first")
    client.add_toxic("echo", "latency", {"latency": 50}, name="second")
    assert 0.100 <= round_trip(echo_proxy["listen"]) < 0.4


def test_latency_delays_a_stream_not_each_chunk_in_turn(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "latency", {"latency": 100})
    with connect(echo_proxy["listen"]) as sock:
        t0 = time.perf_counter()
        for i in range(10):  # ten separate chunks, sent 5 ms apart
            sock.sendall(b"%d" % i)
            time.sleep(0.005)
        recv_exact(sock, 10)
        elapsed = time.perf_counter() - t0
    assert 0.1 <= elapsed < 0.5, elapsed  # not 10 x 100 ms


def test_jitter_spreads_latency(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "latency", {"latency": 50, "jitter": 40})
    with connect(echo_proxy["listen"]) as sock:
        samples = []
        for _ in range(20):
            t0 = time.perf_counter()
            sock.sendall(b"j")
            recv_exact(sock, 1)
            samples.append(time.perf_counter() - t0)
    assert all(0.010 <= s < 0.4 for s in samples), samples
    assert min(samples) < 0.040 and max(samples) > 0.060, samples


def test_bandwidth_within_ten_percent(client: ToxiproxyClient, blob: Callable[[bytes], BlobServer]) -> None:
    size = 1_000_000
    server = blob(b"b" * size)
    listen = client.create_proxy("bw", "127.0.0.1:0", server.address)["listen"]
    client.add_toxic("bw", "bandwidth", {"rate": 1000})
    t0 = time.perf_counter()
    with connect(listen, timeout=10) as sock:
        data, _ = read_all(sock)
    rate = len(data) / (time.perf_counter() - t0) / 1000
    assert len(data) == size
    assert 900 <= rate <= 1100, f"{rate:.0f} KB/s"


def test_bandwidth_upstream_only_slows_the_request_path(client: ToxiproxyClient, echo: EchoServer,
                                                        echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "bandwidth", {"rate": 100}, stream="upstream")
    with connect(echo_proxy["listen"]) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"u" * 30_000)  # 0.3 s at 100 KB/s
        recv_exact(sock, 30_000)
        elapsed = time.perf_counter() - t0
    assert 0.27 <= elapsed < 1.0, elapsed  # unthrottled it takes a millisecond


def test_timeout_zero_holds_the_connection_until_removed(client: ToxiproxyClient, echo: EchoServer,
                                                         echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "timeout", {"timeout": 0}, stream="upstream")
    with connect(echo_proxy["listen"]) as sock:
        sock.sendall(b"swallowed")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert bytes(echo.received) == b""  # upstream toxic: nothing reached the server
        client.remove_toxic("echo", "timeout_upstream")
        sock.settimeout(5)
        assert closed_by_peer(sock)  # removing the toxic closed the connection
    assert round_trip(echo_proxy["listen"]) < 0.1


def test_timeout_closes_after_the_last_data(client: ToxiproxyClient, echo: EchoServer,
                                            echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "timeout", {"timeout": 200})
    with connect(echo_proxy["listen"]) as sock:
        sock.sendall(b"data")
        wait_until(lambda: bytes(echo.received) == b"data", 5, what="the request reaching the server")
        t0 = time.perf_counter()
        assert sock.recv(10) == b""  # the downstream answer was swallowed, then the connection closed
        assert 0.15 <= time.perf_counter() - t0 < 1.0


def test_reset_peer_resets_the_client(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "reset_peer", {"timeout": 0})
    with connect(echo_proxy["listen"]) as sock:
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            while sock.recv(10):
                pass


def test_reset_peer_waits_its_timeout(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "reset_peer", {"timeout": 150}, stream="upstream")
    with connect(echo_proxy["listen"]) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            while sock.recv(10):
                pass
        assert 0.15 <= time.perf_counter() - t0 < 1.0


def test_limit_data_passes_exactly_that_many_bytes(client: ToxiproxyClient,
                                                   blob: Callable[[bytes], BlobServer]) -> None:
    payload = bytes(range(256)) * 40
    server = blob(payload)
    listen = client.create_proxy("lim", "127.0.0.1:0", server.address)["listen"]
    client.add_toxic("lim", "limit_data", {"bytes": 1000})
    for _ in range(2):  # per connection: the second one gets its own 1000 bytes
        with connect(listen) as sock:
            data, _ = read_all(sock)
        assert data == payload[:1000]


def test_limit_data_upstream_counts_across_chunks(client: ToxiproxyClient, echo: EchoServer,
                                                  echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "limit_data", {"bytes": 10}, stream="upstream")
    with connect(echo_proxy["listen"]) as sock:
        sock.sendall(b"12345")
        assert recv_exact(sock, 5) == b"12345"
        sock.sendall(b"6789abcdef")
        try:
            data, _ = read_all(sock)  # the connection closes once the limit is reached
        except ConnectionResetError:
            data = b""
    assert b"6789a".startswith(data)
    wait_until(lambda: bytes(echo.received) == b"123456789a", 5, what="exactly 10 bytes at the server")


def test_slicer_cuts_data_into_many_small_reads(client: ToxiproxyClient,
                                                blob: Callable[[bytes], BlobServer]) -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes
    server = blob(payload)
    listen = client.create_proxy("slice", "127.0.0.1:0", server.address)["listen"]
    with connect(listen) as sock:
        data, plain_reads = read_all(sock)
    assert data == payload and len(plain_reads) <= 3
    client.add_toxic("slice", "slicer", {"average_size": 100, "size_variation": 20, "delay": 1000})
    with connect(listen) as sock:
        t0 = time.perf_counter()
        data, reads = read_all(sock)
        elapsed = time.perf_counter() - t0
    assert data == payload
    assert len(reads) >= 20 and max(reads) < 2000, reads
    assert elapsed >= 0.05  # ~100 slices, 1 ms apart


def test_slow_close_delays_the_close(client: ToxiproxyClient, blob: Callable[[bytes], BlobServer]) -> None:
    server = blob(b"x" * 100)
    listen = client.create_proxy("sc", "127.0.0.1:0", server.address)["listen"]
    client.add_toxic("sc", "slow_close", {"delay": 300})
    with connect(listen) as sock:
        assert recv_exact(sock, 100) == b"x" * 100
        t0 = time.perf_counter()
        assert sock.recv(10) == b""
        assert 0.25 <= time.perf_counter() - t0 < 1.5


def test_half_close_is_passed_on(echo_proxy: dict[str, Any]) -> None:
    with connect(echo_proxy["listen"]) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        data, _ = read_all(sock)
    assert data == b"last words"


def test_toxicity_is_drawn_per_connection(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    """limit_data of 0 bytes upstream cuts a connection at its first byte; with toxicity 0.5 about half of
    200 connections are cut (binomial: mean 100, sd 7.1; bounds at 4.5 sd)."""
    client.add_toxic("echo", "limit_data", {"bytes": 0}, stream="upstream", toxicity=0.5)
    cut = 0
    for _ in range(200):
        with connect(echo_proxy["listen"]) as sock:
            sock.sendall(b"ab")
            try:
                got = sock.recv(10)
            except ConnectionResetError:
                got = b""
            if got == b"":
                cut += 1
                continue
            # An unaffected connection stays unaffected.
            assert got + recv_exact(sock, 2 - len(got)) == b"ab"
            sock.sendall(b"cd")
            assert recv_exact(sock, 2) == b"cd"
    assert 68 <= cut <= 132, cut
    client.update_toxic("echo", "limit_data_upstream", toxicity=0.0)
    assert round_trip(echo_proxy["listen"], b"xy") < 0.2


def test_disable_drops_connections_and_enable_keeps_the_port(client: ToxiproxyClient,
                                                            echo_proxy: dict[str, Any]) -> None:
    listen = echo_proxy["listen"]
    with connect(listen) as sock:
        sock.sendall(b"a")
        recv_exact(sock, 1)
        client.update_proxy("echo", enabled=False)
        assert closed_by_peer(sock)
    wait_refused(listen)
    assert client.update_proxy("echo", enabled=True)["listen"] == listen
    assert not refused(listen)
    assert round_trip(listen) < 0.1


def _stream_through(listen: str, total: int, during: Callable[[], None]) -> bytes:
    """Send ``total`` numbered bytes in small writes while ``during`` changes toxics; return what came back."""
    payload = b"".join(b"%08d" % i for i in range(total // 8))
    received = bytearray()
    with connect(listen, timeout=20) as sock:
        def reader() -> None:
            while len(received) < len(payload):
                data = sock.recv(65536)
                if not data:
                    return
                received.extend(data)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        done = threading.Event()

        def writer() -> None:
            for off in range(0, len(payload), 800):
                sock.sendall(payload[off:off + 800])
                time.sleep(0.001)
            done.set()

        wthread = threading.Thread(target=writer, daemon=True)
        wthread.start()
        during()
        wthread.join(30)
        thread.join(30)
    assert done.is_set()
    return bytes(received)


def test_live_toxic_changes_lose_and_reorder_nothing(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    def churn() -> None:
        for _ in range(3):
            client.add_toxic("echo", "latency", {"latency": 30, "jitter": 20}, name="lat")
            time.sleep(0.02)
            client.add_toxic("echo", "slicer", {"average_size": 50, "size_variation": 10}, name="sl",
                             stream="upstream")
            client.add_toxic("echo", "bandwidth", {"rate": 500}, name="bw")
            time.sleep(0.02)
            client.update_toxic("echo", "lat", attributes={"latency": 5})
            client.update_toxic("echo", "bw", attributes={"rate": 2000})
            time.sleep(0.02)
            client.remove_toxic("echo", "lat")
            client.remove_toxic("echo", "sl")
            time.sleep(0.02)
            client.remove_toxic("echo", "bw")

    payload = b"".join(b"%08d" % i for i in range(200_000 // 8))
    assert _stream_through(echo_proxy["listen"], 200_000, churn) == payload


def test_toxics_added_while_open_apply_to_open_connections(client: ToxiproxyClient,
                                                           echo_proxy: dict[str, Any]) -> None:
    with connect(echo_proxy["listen"]) as sock:
        sock.sendall(b"1")
        recv_exact(sock, 1)
        client.add_toxic("echo", "latency", {"latency": 100})
        t0 = time.perf_counter()
        sock.sendall(b"2")
        recv_exact(sock, 1)
        assert time.perf_counter() - t0 >= 0.1
        client.update_toxic("echo", "latency_downstream", attributes={"latency": 200})
        t0 = time.perf_counter()
        sock.sendall(b"3")
        recv_exact(sock, 1)
        assert time.perf_counter() - t0 >= 0.2
        client.remove_toxic("echo", "latency_downstream")
        t0 = time.perf_counter()
        sock.sendall(b"4")
        recv_exact(sock, 1)
        assert time.perf_counter() - t0 < 0.1


def test_removing_a_delaying_toxic_releases_what_it_held(client: ToxiproxyClient,
                                                         echo_proxy: dict[str, Any]) -> None:
    client.add_toxic("echo", "latency", {"latency": 5000})
    with connect(echo_proxy["listen"]) as sock:
        sock.sendall(b"held")
        time.sleep(0.05)  # let it reach the toxic (the test is about what happens to held data)
        t0 = time.perf_counter()
        client.remove_toxic("echo", "latency_downstream")
        assert recv_exact(sock, 4) == b"held"
        assert time.perf_counter() - t0 < 1.0


def test_noop_toxic_is_accepted_and_passes_data(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    assert client.add_toxic("echo", "noop")["type"] == "noop"
    assert round_trip(echo_proxy["listen"], b"n" * 100) < 0.1


def test_toxicity_bounds_hold(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    """Toxicity 0 never applies, 1 always does."""
    client.add_toxic("echo", "latency", {"latency": 80}, toxicity=0.0)
    assert all(round_trip(echo_proxy["listen"]) < 0.08 for _ in range(5))
    client.update_toxic("echo", "latency_downstream", toxicity=1.0)
    assert all(round_trip(echo_proxy["listen"]) >= 0.08 for _ in range(3))
    assert math.isclose(client.toxics("echo")[0]["toxicity"], 1.0)


def test_slow_connect_delays_new_connections_only(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    listen = echo_proxy["listen"]
    with connect(listen) as old:
        old.sendall(b"o")
        recv_exact(old, 1)
        client.add_toxic("echo", "slow_connect", {"delay": 200}, stream="upstream")
        assert 0.2 <= round_trip(listen) < 1.0
        t0 = time.perf_counter()
        old.sendall(b"o")
        recv_exact(old, 1)
        assert time.perf_counter() - t0 < 0.1
    client.remove_toxic("echo", "slow_connect_upstream")
    assert round_trip(listen) < 0.1


def test_bulk_data_arrives_intact_through_a_slow_reader(client: ToxiproxyClient) -> None:
    """The straight-through path reuses its read buffer: what the destination cannot take at once must be
    kept intact (a slow reader forces partial sends)."""
    import hashlib
    import os

    srv = socket.create_server(("127.0.0.1", 0))
    got: dict[str, Any] = {}

    def sink() -> None:
        conn, _ = srv.accept()
        digest, n = hashlib.sha256(), 0
        with conn:
            while data := conn.recv(1 << 16):
                digest.update(data)
                n += len(data)
                if n % (1 << 20) < len(data):
                    time.sleep(0.005)
        got.update(digest=digest.hexdigest(), n=n)

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    listen = client.create_proxy("bulk", "127.0.0.1:0", f"127.0.0.1:{srv.getsockname()[1]}")["listen"]
    block, digest, total = os.urandom(1 << 20), hashlib.sha256(), 0
    with connect(listen, timeout=30) as sock:
        for i in range(48):
            data = block[i:] + block[:i]
            sock.sendall(data)
            digest.update(data)
            total += len(data)
        sock.shutdown(socket.SHUT_WR)
        thread.join(30)
    srv.close()
    assert got == {"digest": digest.hexdigest(), "n": total}


def test_drop_stalls_some_chunks_like_tcp_retransmits(client: ToxiproxyClient, echo_proxy: dict[str, Any]) -> None:
    """Half the chunks "lost": those arrive >= 20 ms (one retransmission timeout) late, the rest at once;
    nothing is lost or reordered. 40 round trips: binomial bounds at ~4.4 sd."""
    made = client.add_toxic("echo", "drop", {"percent": 50, "rto": 20})
    assert made["attributes"] == {"percent": 50, "rto": 20}
    assert client.add_toxic("echo", "drop", {"percent": 10}, name="d2")["attributes"]["rto"] == 200
    client.remove_toxic("echo", "d2")
    stalled = 0
    with connect(echo_proxy["listen"]) as sock:
        for i in range(40):
            t0 = time.perf_counter()
            sock.sendall(b"%02d" % i)
            assert recv_exact(sock, 2) == b"%02d" % i
            stalled += time.perf_counter() - t0 >= 0.02
    assert 6 <= stalled <= 34, stalled
