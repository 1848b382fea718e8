"""The examples in docs/proxy.md run as written and print what the text says."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "proxy.md"
FENCE = re.compile(r"^```(python(?: pytest)?)\n(.*?)^```", re.M | re.S)


def blocks(info: str) -> list[str]:
    return [body for kind, body in FENCE.findall(DOC.read_text()) if kind == info]


def test_python_examples_run_in_order(tmp_path: Path) -> None:
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(blocks("python")))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "400 invalid toxic attributes: latency latency must be >= 0 (milliseconds), got -5" in out
    assert "['slow_close_downstream']" in out
    assert "refused" in out and "network-bandwidth: kbps must be > 0 (KB/s), got 0" in out
    assert "['db', 'gw0-db']" in out and "\n['db']\n" in out
    during = float(re.search(r"during: (\d+) ms", out).group(1))  # type: ignore[union-attr]
    after = float(re.search(r"after: ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    assert during >= 150 and after < 100


def test_pytest_example_runs(pytester: pytest.Pytester) -> None:
    [code] = blocks("python pytest")
    pytester.makepyfile(test_doc_example=code)
    pytester.runpytest_subprocess().assert_outcomes(passed=2)
