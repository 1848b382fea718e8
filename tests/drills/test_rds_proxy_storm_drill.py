"""The rds_proxy_storm drill, run as a user runs it (pytest --pyargs, fixtures overridden in conftest.py): the
reference app passes; an app whose Lambda still connects to the DB instance instead of the RDS Proxy fails with
the connection-storm violation naming `too many clients`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]


def run_drill(pytester: pytest.Pytester, conftest: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    pytester.makeconftest(conftest)
    reports = pytester.path / "reports"
    # A subprocess: matplotlib's C extensions cannot be imported twice in one process.
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--dbdrill-report-dir={reports}", "--pyargs",
                                        "suites.rds_proxy_storm")
    [journal] = list(Path(reports).glob("*/journal.json"))
    return res, json.loads(journal.read_text())


def results(journal: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in journal["results"]}


def test_the_reference_app_passes(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, "")
    res.assert_outcomes(passed=1)
    checks = results(journal)
    assert journal["verdict"] == "pass", journal.get("message")
    storm = checks["connection-storm"]["numbers"]
    assert storm["direct_exhausted"] > 0 and storm["proxy_ok"] == storm["clients"] == 100
    rto = checks["proxy-vs-dns"]["numbers"]
    assert rto["rto_proxy_s"] < rto["rto_dns_s"]


def test_an_app_that_bypasses_the_proxy_is_caught(pytester: pytest.Pytester) -> None:
    res, journal = run_drill(pytester, """
import pytest
from suites.pgclient import default_connect

@pytest.fixture
def proxy_drill_connect():
    def connect(host, port, user, password, dbname):   # config still names the DB instance, not the proxy
        return default_connect("drill-storm.aaaaaaaaaa.us-east-1.rds.amazonaws.com", port, user, password, dbname)
    return connect
""")
    res.assert_outcomes(failed=1)
    assert journal["verdict"] == "fail"
    storm = results(journal)["connection-storm"]
    assert not storm["valid"] and storm["numbers"]["proxy_exhausted"] > 0
    assert {v["what"] for v in storm["violations"]} == {"storm-failure"}
    res.stdout.re_match_lines([r".*storm-failure: invocation through the proxy failed:.*"
                               r"(too many clients|connection slots are reserved).*"])
