"""The CI gate templates: the shell entry runs drills and gates on the verdict; the workflows parse."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def gate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBDRILL_", "AWS_"))}
    # The gate's venv is this one, where dbdrill is installed already: pip has nothing to fetch.
    env.update(DBDRILL_VENV=sys.prefix, DBDRILL_SPEC="dbdrill", DBDRILL_REPORT_DIR=str(tmp_path / "reports"))
    return subprocess.run(["bash", str(ROOT / "ci" / "dbdrill-gate.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_gate_passes_and_fails_on_thresholds(tmp_path: Path) -> None:
    ok = gate(tmp_path, "network_faults")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    root = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    assert {p.get("name"): p.get("value") for p in root.iter("property")}["dbdrill.verdict"] == "pass"
    bad = gate(tmp_path, "network_faults", "-t", "max_rto=0.05")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    unknown = gate(tmp_path, "no_such_drill")
    assert unknown.returncode == 2 and "unknown drill" in unknown.stderr


def test_workflow_templates_parse() -> None:
    gha = yaml.safe_load((ROOT / "ci" / "github-actions.yml").read_text())
    steps = gha["jobs"]["drills"]["steps"]
    assert any("ci/dbdrill-gate.sh" in s.get("run", "") for s in steps)
    assert any(s.get("uses", "").startswith("actions/upload-artifact") and s.get("if") == "always()" for s in steps)
    gitlab = yaml.safe_load((ROOT / "ci" / "gitlab-ci.yml").read_text())
    assert gitlab["dbdrill-gate"]["artifacts"]["reports"]["junit"] == "dbdrill-reports/junit.xml"
