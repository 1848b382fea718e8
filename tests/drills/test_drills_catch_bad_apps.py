"""Each drill, pointed at a deliberately broken app (as a user points it at theirs, by overriding a fixture
in conftest.py), fails with the violation that names the bug; the journal says so too."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


# A client that resolves an endpoint once and keeps the address for good (like a JVM with networkaddress.cache.ttl
# -1): after a failover it still talks to the old writer, or to the old primary region.
PINNED_DNS_CLIENT = """
import socket
import pytest
from suites.pgclient import default_connect

@pytest.fixture
def rds_drill_connect():
    cache = {}
    def connect(host, port, user, password, dbname):
        if host not in cache:
            cache[host] = socket.gethostbyname(host)
        return default_connect(cache[host], port, user, password, dbname)
    return connect
"""


def run_drill(pytester: pytest.Pytester, name: str, conftest: str) -> tuple[pytest.RunResult, dict]:
    pytester.makeconftest(conftest)
    reports = pytester.path / "reports"
    # A subprocess: matplotlib's C extensions cannot be imported twice in one process.
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--dbdrill-report-dir={reports}", "--pyargs",
                             f"suites.{name}")
    [journal] = list(Path(reports).glob("*/journal.json"))
    return res, json.loads(journal.read_text())


def failed_checks(journal: dict) -> dict[str, dict]:
    return {r["name"]: r for r in journal["results"] if not r["valid"]}


def test_ttl_drill_catches_an_app_serving_expired_items(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "ttl_expiry", """
import pytest

@pytest.fixture
def ttl_drill_reader():
    def read(client, table, key):   # forgets to filter items past their TTL
        return client.get_item(TableName=table, Key={"pk": {"S": key}}).get("Item")
    return read
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*expired-served: item s* expired at *"])
    assert journal["verdict"] == "fail"
    assert failed_checks(journal)["expired-reads"]["numbers"]["expired_served"] > 0


def test_ttl_drill_catches_a_handler_archiving_user_deletes(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "ttl_expiry", """
import pytest

@pytest.fixture
def ttl_drill_stream_handler():
    archived = []
    def handler(event):             # archives every REMOVE, user deletes included
        archived.extend(r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"] if r["eventName"] == "REMOVE")
    return handler, lambda: list(archived)
""")
    res.assert_outcomes(failed=1)
    violations = failed_checks(journal)["ttl-stream"]["violations"]
    assert {v["what"] for v in violations} == {"archived-wrongly"}
    assert len(violations) == 8  # the drill's user deletes


def test_throttling_drill_catches_a_writer_that_swallows_throttles(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "dynamodb_throttling", """
import pytest
from botocore.exceptions import ClientError

@pytest.fixture
def dynamodb_drill_writer():
    def write(client, table, item):   # "fire and forget": reports success on a throttle
        try:
            client.put_item(TableName=table, Item=item)
        except ClientError:
            pass
    return write
""")
    res.assert_outcomes(failed=1)
    lost = failed_checks(journal)["lost-writes"]
    assert lost["numbers"]["lost"] > 0
    res.stdout.fnmatch_lines(["*lost write: acknowledged write 'p*' is missing from the final read*"])


def test_region_drill_catches_an_app_without_failover(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "region_outage", """
import pytest
from suites.region_outage import FailoverApp

class Pinned(FailoverApp):
    def put(self, key):               # never leaves its home region
        self.clients[0].put_item(TableName="dbdrill-global-orders", Item={"pk": {"S": key}})

@pytest.fixture
def region_drill_app():
    return Pinned
""")
    res.assert_outcomes(failed=1)
    failed = failed_checks(journal)
    assert "no-failover" in {v["what"] for v in failed["replicas-converged"]["violations"]}
    recovery = next(r for r in journal["results"] if r["name"] == "recovery")
    [outage] = journal["faults"]
    cut_for = outage["end_mono"] - outage["injected_mono"]  # from the cut taking effect to the heal
    assert cut_for >= 1.5
    assert recovery["numbers"]["windows"][0]["rto_write_s"] >= cut_for - 0.1  # stuck for the whole outage


def test_network_drill_catches_a_client_that_never_reconnects(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "network_faults", """
import socket
import pytest

@pytest.fixture
def network_drill_probe():
    state = {}
    def probe(host, port):            # one connection for life: after the partition it is dead for good
        if "sock" not in state:
            state["sock"] = socket.create_connection((host, port), timeout=1.0)
        state["sock"].sendall(b"ping")
        if not state["sock"].recv(16):
            raise ConnectionResetError("closed")
    return probe
""")
    res.assert_outcomes(failed=1)
    assert journal["verdict"] in ("fail", "error")


def test_multi_az_drill_catches_a_client_that_caches_dns_forever(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "multi_az_failover", PINNED_DNS_CLIENT)
    res.assert_outcomes(failed=1)
    failed = failed_checks(journal)
    assert "recovery" in failed, journal["message"]
    assert {v["what"] for v in failed["recovery"]["violations"]} & {"no recovery", "slow recovery"}


def test_aurora_drill_catches_a_client_pinned_to_the_old_writer(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "aurora_failover", PINNED_DNS_CLIENT)
    res.assert_outcomes(failed=1)
    assert "recovery" in failed_checks(journal), journal["message"]


def test_global_drill_catches_a_client_pinned_to_the_old_primary_region(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "aurora_global_failover", PINNED_DNS_CLIENT)
    res.assert_outcomes(failed=1)
    failed = failed_checks(journal)
    assert "recovery" in failed, journal["message"]
    assert "split-brain" not in failed  # fenced, then a read-only replica: it never acknowledged a write
