"""`dbdrill up` runs RDS too: a program in another process creates a DB instance with plain boto3, resolves its
endpoint name through DBDRILL_DNS (dnspython, as any other program would) and connects with psycopg; a
`dbdrill fault force-failover` moves the name to the standby."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.process import Executor

DBDRILL = str(Path(sys.executable).parent / "dbdrill")
CLIENT = r"""
import sys, boto3, dns.resolver, psycopg
host, port = __import__("os").environ["DBDRILL_DNS"].rsplit(":", 1)
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers, resolver.port = [host], int(port)
rds = boto3.client("rds")
if sys.argv[1] == "create":
    rds.create_db_instance(DBInstanceIdentifier="shop", Engine="postgres", DBInstanceClass="db.t3.micro",
                           MasterUsername="shop", MasterUserPassword="shop-pass-1", DBName="shop", MultiAZ=True)
    rds.get_waiter("db_instance_available").wait(DBInstanceIdentifier="shop", WaiterConfig={"Delay": 1})
name = rds.describe_db_instances(DBInstanceIdentifier="shop")["DBInstances"][0]["Endpoint"]["Address"]
address = resolver.resolve(name, "A")[0].to_text()
with psycopg.connect(host=address, port=5432, user="shop", password="shop-pass-1", dbname="shop",
                     connect_timeout=5) as conn:
    print("OK", name, address, conn.execute("select inet_server_addr()").fetchone()[0] is not None)
"""


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DBDRILL_"))}, **extra}


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Executor, dict[str, str]]]:
    log = tmp_path / "up.log"
    executor = Executor("dbdrill up", [DBDRILL, "up"], log_path=log, timeout=90, env=clean_env({}),
                        ready=lambda: log.exists() and "# dbdrill up: ready" in log.read_text())
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


def run(exports: dict[str, str], *args: str) -> str:
    out = subprocess.run(args, env=clean_env(exports), capture_output=True, text=True, timeout=120)
    return out.stdout.strip() + out.stderr[-800:]


def test_other_programs_use_rds_through_up(up: tuple[Executor, dict[str, str]]) -> None:
    executor, exports = up
    assert "rds" in executor.log_path.read_text()
    first = run(exports, sys.executable, "-c", CLIENT, "create")
    assert first.startswith("OK shop.aaaaaaaaaa.us-east-1.rds.amazonaws.com 127."), first
    before = first.split()[2]
    failover = run(exports, DBDRILL, "fault", "force-failover", "--instance", "shop")
    assert failover.startswith("f1\tforce-failover"), failover
    second = run(exports, sys.executable, "-c", CLIENT, "again")
    assert second.startswith("OK ") and second.split()[2] != before, (first, second)
    executor.signal(signal.SIGTERM)
    assert executor.proc is not None and executor.proc.wait(30) == 0
