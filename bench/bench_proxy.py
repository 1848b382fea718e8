"""Fault proxy benchmark: small round trips and bulk throughput, direct vs through the proxy (in-process
thread and standalone ``dbdrill proxy serve``), and server start time, measured side by side in one run.

Run: python bench/bench_proxy.py   (loopback only, under a minute)
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.proxy import ProxyServer  # noqa: E402
from harness.toxiproxy import ToxiproxyClient  # noqa: E402

# The upstream runs in its own process so it does not share a GIL with the proxy or the client.
UPSTREAM = r"""
import socket, struct, sys, threading
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    mode = c.recv(1)
    if mode == b"E":
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
    elif mode == b"S":
        total = 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            total += len(d)
        c.sendall(struct.pack("!Q", total))
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def connect(addr: tuple[str, int], mode: bytes) -> socket.socket:
    sock = socket.create_connection(addr, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mode)
    return sock


def round_trips(addr: tuple[str, int], n: int, size: int = 64) -> list[float]:
    payload = b"x" * size
    out = []
    with connect(addr, b"E") as sock:
        for _ in range(200):  # warm up
            sock.sendall(payload)
            sock.recv(65536)
        for _ in range(n):
            t0 = time.perf_counter()
            sock.sendall(payload)
            got = len(sock.recv(65536))
            while got < size:
                got += len(sock.recv(65536))
            out.append(time.perf_counter() - t0)
    return sorted(out)


def bulk(addr: tuple[str, int], total: int, block: int = 256 * 1024) -> float:
    """Bytes per second sent through ``addr`` to a sink that confirms the count."""
    buf = b"b" * block
    with connect(addr, b"S") as sock:
        t0 = time.perf_counter()
        sent = 0
        while sent < total:
            sock.sendall(buf)
            sent += block
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < 8:
            reply += sock.recv(8)
        elapsed = time.perf_counter() - t0
    assert int.from_bytes(reply, "big") == sent, "bytes lost on the way"
    return sent / elapsed


def pct(samples: list[float], p: float) -> float:
    return samples[min(len(samples) - 1, int(len(samples) * p))]


def addr_of(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


def start_times(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        server = ProxyServer().start()
        requests.get(server.url + "/version", timeout=5).raise_for_status()
        out.append(time.perf_counter() - t0)
        server.stop()
    return sorted(out)


def standalone_server() -> tuple[subprocess.Popen[bytes], str]:
    dbdrill = Path(sys.executable).parent / "dbdrill"
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(dbdrill), "proxy", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    url = line.strip().rsplit(" ", 1)[-1]
    requests.get(url + "/version", timeout=5).raise_for_status()
    spent = (time.perf_counter() - t0) * 1000
    print(f"  standalone `dbdrill proxy serve` ready (spawn + imports + start): {spent:.0f} ms")
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--bulk-mib", type=int, default=256)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE)
    assert upstream.stdout is not None
    direct = ("127.0.0.1", int(upstream.stdout.readline()))
    results: dict[str, float] = {}
    standalone, standalone_url = None, ""
    try:
        starts = start_times(20)
        results["start_ms_p50"] = statistics.median(starts) * 1000
        results["start_ms_max"] = starts[-1] * 1000
        print(f"proxy server start (thread, API answering): p50 {results['start_ms_p50']:.1f} ms, "
              f"max {results['start_ms_max']:.1f} ms")
        standalone, standalone_url = standalone_server()

        with ProxyServer() as server:
            targets = {"direct": direct}
            for label, url in (("in-process", server.url), ("standalone", standalone_url)):
                listen = ToxiproxyClient(url).create_proxy("bench", "127.0.0.1:0", f"{direct[0]}:{direct[1]}")
                targets[label] = addr_of(listen["listen"])

            print(f"\nsmall round trip (64 B echo, {args.round_trips} samples each, interleaved runs)")
            samples: dict[str, list[float]] = {k: [] for k in targets}
            for _ in range(2):
                for label, addr in targets.items():
                    samples[label] += round_trips(addr, args.round_trips // 2)
            base50, base99 = pct(sorted(samples["direct"]), 0.5), pct(sorted(samples["direct"]), 0.99)
            for label, vals in samples.items():
                vals.sort()
                p50, p99 = pct(vals, 0.5), pct(vals, 0.99)
                results[f"rtt_{label}_p50_us"], results[f"rtt_{label}_p99_us"] = p50 * 1e6, p99 * 1e6
                added = "" if label == "direct" else (f"  added p50 {(p50 - base50) * 1e6:+.0f} us, "
                                                      f"p99 {(p99 - base99) * 1e6:+.0f} us")
                print(f"  {label:<11} p50 {p50 * 1e6:7.1f} us  p99 {p99 * 1e6:7.1f} us{added}")

            total = args.bulk_mib * 1024 * 1024
            rounds = 3
            print(f"\nbulk throughput ({args.bulk_mib} MiB client -> server; {rounds} interleaved rounds, median)")
            rates: dict[str, list[float]] = {k: [] for k in targets}
            ratios: dict[str, list[float]] = {k: [] for k in targets}
            for _ in range(rounds):
                this = {label: bulk(addr, total) for label, addr in targets.items()}
                for label, rate in this.items():
                    rates[label].append(rate)
                    ratios[label].append(rate / this["direct"])
            for label in targets:
                rate, ratio = statistics.median(rates[label]), statistics.median(ratios[label])
                results[f"bulk_{label}_gbps"], results[f"bulk_{label}_ratio"] = rate / 1e9, ratio
                shown = "" if label == "direct" else f"  ratio {ratio:.2f} of direct"
                print(f"  {label:<11} {rate / 1e9:6.2f} GB/s{shown}")
    finally:
        upstream.kill()
        if standalone is not None:
            standalone.terminate()
            standalone.wait(10)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
