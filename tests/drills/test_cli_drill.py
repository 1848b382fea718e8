"""`dbdrill drill`, `dbdrill report` and `dbdrill fis`: refusals before anything starts, reports written,
exit codes that gate CI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest


def dbdrill(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DBDRILL_", "AWS_"))}
    full_env.update(env or {})
    return subprocess.run([str(Path(sys.executable).parent / "dbdrill"), *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def nothing_started(res: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert "running" not in res.stderr.split("Error")[0]
    assert not (tmp_path / "dbdrill-reports").exists()


def test_unknown_drill_is_refused_with_the_list(tmp_path: Path) -> None:
    res = dbdrill("drill", "ttl_expiri", cwd=tmp_path)
    assert res.returncode == 2
    assert "unknown drill 'ttl_expiri'. Did you mean ttl_expiry?" in res.stderr
    assert "network_faults" in res.stderr
    nothing_started(res, tmp_path)


def test_threshold_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    res = dbdrill("drill", "region_outage", "-t", "max_rto=fast", cwd=tmp_path)
    assert res.returncode == 2
    assert "threshold max_rto" in res.stderr and "expects seconds" in res.stderr and "'fast'" in res.stderr
    nothing_started(res, tmp_path)
    res = dbdrill("drill", "network_faults", "-t", "max_rtoo=1", cwd=tmp_path)
    assert res.returncode == 2 and "did you mean max_rto" in res.stderr


def test_target_aws_without_allow_list_is_refused(tmp_path: Path) -> None:
    res = dbdrill("drill", "network_faults", "--target", "aws", cwd=tmp_path)
    assert res.returncode == 2
    assert "allow-list" in res.stderr and "Nothing was started" in res.stderr
    nothing_started(res, tmp_path)


def test_list() -> None:
    res = dbdrill("drill", "--list", cwd=Path.cwd())
    assert res.returncode == 0
    assert "ttl_expiry" in res.stdout and "multi_az_failover" in res.stdout


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_drill_writes_reports_and_gates(tmp_path: Path) -> None:
    res = dbdrill("drill", "network_faults", "--report-dir", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    [journal_path] = (tmp_path / "out").glob("network_faults-*/journal.json")
    journal = json.loads(journal_path.read_text())
    assert journal["verdict"] == "pass" and journal["faults"]
    assert "PASS  network_faults" in res.stdout
    # The HTML report is self-contained and carries the timeline plot.
    parser = _Tags()
    parser.feed((journal_path.parent / "report.html").read_text())
    imgs = [a for t, a in parser.tags if t == "img"]
    assert any((a.get("src") or "").startswith("data:image/png;base64,") for a in imgs)
    assert not any(a.get("href", "").startswith("http") for t, a in parser.tags if t == "link")
    # CI's JUnit: pytest's own file with the drill's properties.
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["dbdrill.verdict"] == "pass"
    # A threshold the run cannot meet fails the gate (exit 1), and the report says why.
    res = dbdrill("drill", "network_faults", "--report-dir", "out2", "-t", "max_rto=0.1s", cwd=tmp_path)
    assert res.returncode == 1
    assert "FAIL  network_faults" in res.stdout
    # `dbdrill report` rebuilds the HTML from the journal.
    (journal_path.parent / "report.html").unlink()
    res = dbdrill("report", str(journal_path.parent), cwd=tmp_path)
    assert res.returncode == 0 and (journal_path.parent / "report.html").exists()


def test_report_of_a_non_journal_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "x.json"
    bogus.write_text("{}")
    res = dbdrill("report", str(bogus), cwd=tmp_path)
    assert res.returncode == 2 and "not a dbdrill journal" in res.stderr


FIS = {
    "description": "throttle PutItem, then fail every DynamoDB call",
    "targets": {"app": {"resourceType": "aws:iam:role", "selectionMode": "ALL",
                        "resourceArns": ["arn:aws:iam::123456789012:role/app"]}},
    "actions": {
        "throttle": {"actionId": "aws:fis:inject-api-throttle-error", "targets": {"Roles": "app"},
                     "parameters": {"service": "dynamodb", "operations": "PutItem", "percentage": "100",
                                    "duration": "PT30S"}},
        "break": {"actionId": "aws:fis:inject-api-internal-error", "startAfter": ["throttle"],
                  "targets": {"Roles": "app"},
                  "parameters": {"service": "dynamodb", "operations": "all", "percentage": "100",
                                 "duration": "PT30S"}},
    },
    "stopConditions": [{"source": "none"}],
    "roleArn": "arn:aws:iam::123456789012:role/fis",
}

SETUP = '''
import boto3
from botocore.config import Config

def setup(stack):
    boto3.client("dynamodb").create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")

def workload(history, stop):
    client = boto3.client("dynamodb", config=Config(retries={"total_max_attempts": 1}))
    i = 0
    while not stop.wait(0.02) and i < 5000:
        i += 1
        with history.op(0, "write", value=i, fail_on=(Exception,)):
            client.put_item(TableName="t", Item={"pk": {"S": str(i)}})
'''


def test_fis_run_two_actions_in_order(tmp_path: Path) -> None:
    template = tmp_path / "exp.json"
    template.write_text(json.dumps(FIS))
    (tmp_path / "setup.py").write_text(SETUP)
    res = dbdrill("fis", "run", str(template), "--setup", "setup.py", "--time-scale", "0.02",
                  "--report-dir", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    record = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    assert record["state"] == "completed"
    first, second = record["actions"]["throttle"], record["actions"]["break"]
    assert first["end"] <= second["start"] + 0.05
    [journal] = (tmp_path / "out").glob("fis-exp-*/journal.json")
    data = json.loads(journal.read_text())
    kinds = [f["kind"] for f in data["faults"]]
    assert len(kinds) == 2 and data["faults"][0]["end"] <= data["faults"][1]["start"] + 0.05
    writes = [e for e in data["history"] if e["type"] in ("ok", "fail")]
    assert any(e["type"] == "fail" for e in writes), "the workload must have seen the injected errors"


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "JSON"),
    (json.dumps({**FIS, "actions": {"x": {"actionId": "aws:ec2:stop-instances"}}}), "aws:ec2:stop-instances"),
    (json.dumps({**FIS, "actions": {"a": {**FIS["actions"]["break"], "startAfter": ["nope"]}}}), "nope"),
])
def test_malformed_fis_template_is_refused(tmp_path: Path, content: str, message: str) -> None:
    template = tmp_path / "bad.json"
    template.write_text(content)
    res = dbdrill("fis", "run", str(template), cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    assert not (tmp_path / "dbdrill-reports").exists()
    res = dbdrill("fis", "validate", str(template), cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr
