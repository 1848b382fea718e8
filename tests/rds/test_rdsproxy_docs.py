"""Every python block in docs/rds-proxy-iam.md is a test module that passes as written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "rds-proxy-iam.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_passes(pytester: pytest.Pytester, index: int) -> None:
    pytester.makepyfile(**{f"test_rdsproxy_doc_example_{index}": BLOCKS[index]})
    # In a subprocess: an in-process run drops the modules it imported first, which breaks the outer session.
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=len(re.findall(r"^def test_", BLOCKS[index], flags=re.M)))
