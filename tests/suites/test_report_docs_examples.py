"""The examples in docs/drills-evidence.md run as written and print what the text says."""
from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "drills-evidence.md"
FENCE = re.compile(r"^```(python(?: pytest)?)\n(.*?)^```", re.M | re.S)


def blocks(info: str) -> list[str]:
    return [body for kind, body in FENCE.findall(DOC.read_text()) if kind == info]


def test_python_examples_run_in_order(tmp_path: Path) -> None:
    code = blocks("python")
    assert len(code) >= 6
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(code))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "'fail': 11" in out and "all checks passed" in out
    assert "threshold max_rto (rds-cluster-failover) expects seconds" in out
    assert "FIS template is invalid (2 problem(s))" in out
    assert "'name': 'again', 'planned_at': 0.5" in out
    assert "startAfter forms a cycle: cut -> cut-again -> pause -> cut" in out
    assert "completed [('cut', 'completed', 0.12), ('pause', 'completed', 0.06)" in out
    [report] = (tmp_path / "dbdrill-reports").glob("store-outage-*/report.html")
    assert "data:image/png;base64," in report.read_text()


def test_pytest_example_runs_and_reports(pytester: pytest.Pytester) -> None:
    [code] = blocks("python pytest")
    pytester.makepyfile(test_doc_example=code)
    result = pytester.runpytest("-p", "no:cacheprovider", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1)
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert props["dbdrill.drill"] == "tiny" and props["dbdrill.verdict"] == "pass"
