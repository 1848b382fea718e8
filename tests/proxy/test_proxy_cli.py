"""``dbdrill proxy serve`` as a real child process: it answers, proxies, populates from --config, stops on
SIGTERM with exit code 0 and frees its ports."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from proxykit import EchoServer, round_trip

from harness.process import Executor
from harness.toxiproxy import ToxiproxyClient

DBDRILL = str(Path(sys.executable).parent / "dbdrill")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """Nothing listens there any more: a new server could (SO_REUSEADDR, as servers bind)."""
    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True


def answers(url: str) -> bool:
    try:
        return requests.get(url + "/version", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[Executor, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "from-config", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]))
    proc = Executor("dbdrill proxy", [DBDRILL, "proxy", "serve", "--port", str(port), "--config", str(config)],
                    ready=lambda: answers(url), log_path=tmp_path / "proxy.log", timeout=20)
    proc.start()
    yield proc, url
    proc.stop()


def test_serve_answers_proxies_and_stops_on_sigterm(serve: tuple[Executor, str], echo: EchoServer,
                                                    tmp_path: Path) -> None:
    proc, url = serve
    client = ToxiproxyClient(url)
    assert set(client.proxies()) == {"from-config"}
    listen = client.create_proxy("db", "127.0.0.1:0", echo.address)["listen"]
    assert round_trip(listen) < 0.5
    client.add_toxic("db", "latency", {"latency": 100})
    assert round_trip(listen) >= 0.1

    assert proc.proc is not None
    proc.signal(signal.SIGTERM)
    assert proc.proc.wait(10) == 0
    port = int(url.rsplit(":", 1)[1])
    assert port_free(port) and port_free(int(listen.rsplit(":", 1)[1]))
    assert "dbdrill proxy API on " + url in (tmp_path / "proxy.log").read_text()


def test_serve_with_a_bad_config_says_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x"}]))
    out = subprocess.run([DBDRILL, "proxy", "serve", "--port", "0", "--config", str(bad)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode != 0
    assert "missing required field: upstream at proxy 1" in out.stderr


def test_serve_on_a_busy_port_says_so() -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        out = subprocess.run([DBDRILL, "proxy", "serve", "--port", str(port)], capture_output=True, text=True,
                             timeout=30)
    assert out.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Pick another --port" in out.stderr
