"""The examples in docs/dns.md run as written and print what the text says."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "dns.md"
FENCE = re.compile(r"^```([a-z]+(?: pytest)?)\n(.*?)^```", re.M | re.S)


def blocks(info: str) -> list[str]:
    return [body for kind, body in FENCE.findall(DOC.read_text()) if kind == info]


def test_python_examples_print_what_the_doc_says(tmp_path: Path) -> None:
    code, shown = blocks("python"), blocks("text")
    assert len(code) == 3 and len(shown) == 3
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(code))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "".join(shown)


def test_pytest_examples_pass(pytester: pytest.Pytester) -> None:
    [code] = blocks("python pytest")
    pytester.makepyfile(test_doc_example=code)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)
