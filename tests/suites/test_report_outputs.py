"""Reports: the journal round trip, a self-contained HTML report (parsed: plot, fault table, no external
assets), JUnit XML (parsed), record_property pairs, progress lines -- from a real FIS drill on a real server."""
from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from evidence_kit import KvCrash, KvService, Script, Workers

from faults.base import Fault, Timeline, recording
from faults.fis import ActionContext, ExperimentRunner, default_registry
from harness.config import Settings
from harness.wait import wait_until
from suites.checkers import check_all
from suites.history import History
from suites.report import Journal, Progress, journal_properties, rebuild_html, record_journal, run_dir, write_report
from suites.report.junit import write_junit
from suites.report.plot import auto_bucket
from suites.thresholds import thresholds_for

TEMPLATE = {
    "description": "crash the orders server for PT50S (0.5 s at time scale 0.01), pause, fail over",
    "roleArn": "arn:aws:iam::123456789012:role/fis",
    "stopConditions": [{"source": "none"}],
    "targets": {"subnets": {"resourceType": "aws:ec2:subnet", "selectionMode": "ALL",
                            "resourceArns": ["arn:aws:ec2:us-east-1:123456789012:subnet/subnet-orders"]},
                "cluster": {"resourceType": "aws:rds:cluster", "selectionMode": "ALL",
                            "resourceArns": ["arn:aws:rds:us-east-1:123456789012:cluster:orders"]}},
    "actions": {
        "cut": {"actionId": "aws:network:disrupt-connectivity", "parameters": {"duration": "PT50S"},
                "targets": {"Subnets": "subnets"}, "startAfter": ["warmup"]},
        "warmup": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT20S"}},
        "failover": {"actionId": "aws:rds:failover-db-cluster", "targets": {"Clusters": "cluster"},
                     "startAfter": ["cut"]},
    },
}


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse_html(text: str) -> Collector:
    c = Collector()
    c.feed(text)
    c.close()
    return c


def table_with(c: Collector, header: str) -> list[list[str]]:
    return next(t for t in c.tables if t and header in t[0])


@pytest.fixture
def fis_drill(kv_factory: Callable[[str], KvService]) -> tuple[Journal, KvService]:
    """A whole drill: clients on a real server, an FIS template whose network action crashes it."""
    kv = kv_factory("durable")
    reg = default_registry.copy()

    def cut(params: dict[str, str], targets: dict[str, list[str]], ctx: ActionContext) -> Fault:
        return KvCrash(kv, name=ctx.action_name)

    class Failover(KvCrash):
        kind = "failover"

    reg.register("aws:network:disrupt-connectivity", cut)
    reg.register("aws:rds:failover-db-cluster", lambda p, t, ctx: Failover(kv, name=ctx.action_name))
    history = History(name="orders")
    thresholds = thresholds_for("rds-cluster-failover", "max_rto=20s")
    with recording(Timeline()) as timeline:
        runner = ExperimentRunner(TEMPLATE, registry=reg, time_scale=0.01)
        with Workers(kv, history) as w:
            wait_until(lambda: history.counts()["ok"] > 10, 20, what="traffic before the experiment")
            record = runner.run()
            ok_after = history.counts()["ok"]
            wait_until(lambda: history.counts()["ok"] > ok_after + 20, 20, what="traffic after the experiment")
        w.final_read()
    verdict = check_all(history, faults=timeline.to_list(), thresholds=thresholds)
    journal = Journal.build("orders-failover", history=history, faults=timeline, verdict=verdict,
                            thresholds=thresholds, settings=Settings(), experiment=record)
    return journal, kv


def test_a_real_fis_drill_produces_journal_html_and_junit(fis_drill: tuple[Journal, KvService],
                                                          tmp_path: Path) -> None:
    journal, kv = fis_drill
    assert journal.verdict == "pass", journal.message
    assert journal.experiment is not None and journal.experiment["state"] == "completed"
    assert [f["name"] for f in journal.faults] == ["warmup", "cut", "failover"]
    cut = journal.faults[1]
    assert cut["duration"] >= 0.5 and cut["target"] == kv.node
    recovery = next(r for r in journal.results if r["name"] == "recovery")
    assert [w["fault"] for w in recovery["numbers"]["windows"]] == ["cut", "failover"]  # the wait is no fault

    files = write_report(journal, run_dir(tmp_path, journal.drill))
    assert files.directory.name.startswith("orders-failover-")
    back = Journal.load(files.journal)
    assert back.to_dict() == journal.to_dict()
    assert back.history_obj().counts() == journal.history_obj().counts()

    page = parse_html(files.html.read_text())
    [img] = [a for tag, a in page.tags if tag == "img"]
    src = img["src"] or ""
    assert src.startswith("data:image/png;base64,")
    png = base64.b64decode(src.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    faults = table_with(page, "fault")
    assert [row[0] for row in faults[1:]] == ["warmup", "cut", "failover"] and faults[2][2] == kv.node
    checks = table_with(page, "check")
    assert {row[0]: row[1] for row in checks[1:]}["recovery"] == "pass"
    assert ["max_rto", "20.000"] in table_with(page, "threshold")
    assert any("FIS experiment" in t for t in page.text)
    external = [a for tag, a in page.tags if tag in ("link", "script") or
                any(str(v).startswith(("http:", "https:", "//")) for k, v in a.items() if k in ("src", "href"))]
    assert external == []

    suite = ET.parse(files.junit).getroot()
    [case] = suite.iter("testcase")
    assert case.get("name") == "orders-failover" and case.find("failure") is None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["dbdrill.verdict"] == "pass" and props["dbdrill.check.recovery"] == "pass"
    assert props["dbdrill.threshold.max_rto"] == "20" and props["dbdrill.experiment.state"] == "completed"
    assert float(props["dbdrill.check.recovery.rto_write_s_max"] or 0) >= 0.5


def test_failing_and_erroring_journals_in_junit_and_record_property(script: Script, tmp_path: Path,
                                                                    window: Callable[..., dict[str, Any]]) -> None:
    script.write(1, 0.0, 0.1)
    script.write(2, 0.2, 0.3)
    script.final({1}, at=1.0)
    faults = [window("crash", 0.5, 0.6)]
    bad = Journal.build("lossy", history=script.h, faults=faults, verdict=check_all(script.h, faults=faults))
    broken = Journal.build("broken", history=script.h, error=RuntimeError("cluster never came up"))
    path = write_junit([bad, broken], tmp_path / "junit.xml")
    root = ET.parse(path).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "1", "1")
    lossy, err = root.iter("testcase")
    failure = lossy.find("failure")
    assert failure is not None and "lost write: acknowledged write 2" in (failure.text or "")
    error = err.find("error")
    assert error is not None and error.get("message") == "the drill raised RuntimeError: cluster never came up"
    recorded: list[tuple[str, object]] = []
    record_journal(bad, lambda k, v: recorded.append((k, v)), report="r/report.html")
    assert ("dbdrill.verdict", "fail") in recorded and ("dbdrill.check.lost-writes", "fail") in recorded
    assert ("dbdrill.check.lost-writes.lost", "1") in recorded and recorded[-1] == ("dbdrill.report", "r/report.html")
    assert journal_properties(broken)[1] == ("dbdrill.verdict", "error")


def test_rebuild_html_from_a_saved_journal(script: Script, tmp_path: Path) -> None:
    script.write(1, 0.0, 0.1)
    journal = Journal.build("tiny", history=script.h, verdict=check_all(script.h))
    path = journal.write(tmp_path / "run" / "journal.json")
    out = rebuild_html(path.parent)
    assert out == path.with_name("report.html")
    page = parse_html(out.read_text())
    assert any(tag == "img" for tag, _ in page.tags) and any("tiny" in t for t in page.text)
    with pytest.raises(ValueError, match="not JSON"):
        (tmp_path / "bad.json").write_text("{")
        rebuild_html(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not a dbdrill journal"):
        Journal.from_dict({"drill": "x"})


def test_empty_history_still_renders(tmp_path: Path) -> None:
    journal = Journal.build("nothing", history=History(), error=TimeoutError("no traffic"))
    page = parse_html(write_report(journal, tmp_path).html.read_text())
    assert any("no operations recorded" in t or "the drill raised" in t for t in page.text)
    assert [a for tag, a in page.tags if tag == "img"]


def test_auto_bucket() -> None:
    assert [auto_bucket(s) for s in (0, 3, 60, 600, 1e6)] == [0.1, 0.05, 1.0, 10.0, 60.0]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_off_without_a_tty_unless_forced() -> None:
    h = History()
    with h.op(0, "write", value=1):
        pass
    quiet = io.StringIO()
    with Progress(h, stream=quiet, interval=0.01):
        pass
    assert quiet.getvalue() == ""
    forced = io.StringIO()
    p = Progress(h, stream=forced, interval=0.01, force=True, label="drill")
    with p:
        wait_until(lambda: p.lines_written >= 2, 10, what="two progress lines")
    lines = forced.getvalue().splitlines()
    assert len(lines) >= 3 and lines[0].startswith("[drill]")
    assert "ops 1 (ok 1, fail 0, info 0)" in lines[0] and lines[0].endswith("faults: none")


def test_progress_on_a_tty_rewrites_one_line_and_names_active_faults() -> None:
    class Cut(Fault):
        kind = "cut"

        def _inject(self) -> None:
            pass

        def _heal(self) -> None:
            pass

        def target_label(self) -> str:
            return "db1"

    tty = Tty()
    p = Progress(History(), stream=tty, interval=0.01)
    assert p.enabled
    with Cut(name="net-cut"), p:
        wait_until(lambda: p.lines_written >= 1, 10, what="a progress line")
    out = tty.getvalue()
    assert out.startswith("\r\x1b[2K[dbdrill]") and out.endswith("\n") and out.count("\n") == 1
    assert "faults: net-cut(db1)" in out
    with pytest.raises(ValueError, match="interval must be > 0"):
        Progress(stream=tty, interval=0)


def test_journal_is_plain_json(script: Script) -> None:
    script.write({"k": 1}, 0.0, 0.1)
    journal = Journal.build("json", history=script.h, verdict=check_all(script.h), settings=Settings(),
                            extra={"note": {1, 2}}, env={"postgres": "15.6"})
    data = json.loads(json.dumps(journal.to_dict()))
    assert data["settings"]["report_dir"] == "dbdrill-reports" and data["extra"]["note"] == [1, 2]
    assert data["environment"]["postgres"] == "15.6" and "dbdrill" in data["environment"]["packages"]
