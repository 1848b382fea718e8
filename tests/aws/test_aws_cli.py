"""`dbdrill up` as a real subprocess: prints exports a client can use, `dbdrill fault` injects and heals
through its control endpoint, SIGTERM stops everything and frees the ports."""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness.process import Executor

CLI = [sys.executable, "-c", "from harness.cli import main; main()"]
APP = """
import boto3, sys
from botocore.config import Config
client = boto3.client("dynamodb", config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5),
                      **({"endpoint_url": sys.argv[2]} if len(sys.argv) > 2 else {}))
try:
    if sys.argv[1] == "create":
        client.create_table(TableName="app", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
    print("TABLES", client.list_tables()["TableNames"])
except Exception as exc:
    print("ERROR", (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") or type(exc).__name__)
"""


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DBDRILL_"))}
    return {**keep, **extra}


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Executor, dict[str, str]]]:
    log = tmp_path / "up.log"
    ready = "# dbdrill up: ready"
    executor = Executor("dbdrill up", [*CLI, "up", "--regions", "us-east-1,eu-west-1"], log_path=log,
                        ready=lambda: log.exists() and ready in log.read_text(), timeout=60, env=_clean_env({}))
    executor.start()
    exports = {}
    for line in log.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            exports[key] = shlex.split(value)[0]
    try:
        yield executor, exports
    finally:
        executor.stop()


def _app(exports: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", APP, *args], env=_clean_env(exports), capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip() + out.stderr[-500:]


def _cli(exports: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "fault", *args], env=_clean_env({"DBDRILL_CONTROL_URL": exports[
        "DBDRILL_CONTROL_URL"]}), capture_output=True, text=True, timeout=60)


def _refused(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_up_exports_faults_and_sigterm(up: tuple[Executor, dict[str, str]]) -> None:
    executor, exports = up
    for key in ("AWS_ENDPOINT_URL", "DBDRILL_AWS_ENDPOINT_US_EAST_1", "DBDRILL_AWS_ENDPOINT_EU_WEST_1",
                "DBDRILL_TOXIPROXY_URL", "DBDRILL_CONTROL_URL"):
        assert exports[key].startswith("http://127."), key
    assert exports["AWS_ACCESS_KEY_ID"] == exports["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert exports["AWS_DEFAULT_REGION"] == "us-east-1"
    assert exports["DBDRILL_DNS"] == f"{exports['DBDRILL_DNS_HOST']}:{exports['DBDRILL_DNS_PORT']}"
    assert _app(exports, "create") == "TABLES ['app']"

    injected = _cli(exports, "inject", "api-error", "--service", "dynamodb", "--operation", "ListTables",
                    "--error", "ThrottlingException")
    assert injected.returncode == 0 and injected.stdout.startswith("f1\tapi-error"), injected.stderr
    assert _app(exports, "list") == "ERROR ThrottlingException"
    listed = _cli(exports, "list")
    assert "f1\tapi-error\tdynamodb:ListTables" in listed.stdout
    assert _cli(exports, "heal", "--all").stdout.strip() == "f1"
    assert _app(exports, "list") == "TABLES ['app']"

    outage = _cli(exports, "region-outage", "--region", "us-east-1")
    assert outage.returncode == 0, outage.stderr
    assert _app(exports, "list", exports["DBDRILL_AWS_ENDPOINT_US_EAST_1"]).startswith("ERROR EndpointConnection")
    assert _app(exports, "list").startswith("ERROR")  # the shared URL is cut by signature region too
    assert _app({**exports, "AWS_DEFAULT_REGION": "eu-west-1"}, "list") == "TABLES []"
    bad = _cli(exports, "inject", "region-outage", "--region", "mars-1")
    assert bad.returncode != 0 and "unknown region 'mars-1'" in bad.stderr
    assert _cli(exports, "heal", "f2").returncode == 0
    assert _app(exports, "list", exports["DBDRILL_AWS_ENDPOINT_US_EAST_1"]) == "TABLES ['app']"

    # Network faults on the stack's proxies, by proxy name.
    slow = _cli(exports, "latency", "--proxy", "aws-us-east-1", "--ms", "400")
    assert slow.returncode == 0, slow.stderr
    started = time.monotonic()
    assert _app(exports, "list", exports["DBDRILL_AWS_ENDPOINT_US_EAST_1"]) == "TABLES ['app']"
    assert time.monotonic() - started >= 0.4
    assert _cli(exports, "heal", "--all").returncode == 0
    bad = _cli(exports, "partition", "--proxy", "no-such-proxy")
    assert bad.returncode != 0 and "no-such-proxy" in bad.stderr

    executor.signal(signal.SIGTERM)
    assert executor.proc is not None and executor.proc.wait(20) == 0
    assert "# dbdrill up: stopped" in executor.log_path.read_text()
    for key in ("AWS_ENDPOINT_URL", "DBDRILL_AWS_ENDPOINT_US_EAST_1", "DBDRILL_CONTROL_URL", "DBDRILL_TOXIPROXY_URL"):
        assert _refused(exports[key]), key


def test_fault_without_a_running_up_is_a_clear_error() -> None:
    out = subprocess.run([*CLI, "fault", "list"], env=_clean_env({}), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DBDRILL_CONTROL_URL" in out.stderr
