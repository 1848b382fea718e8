"""Every python block of the reference docs is a test module that passes as written; so is every test module
among the README's and docs/drills.md's examples (their other blocks are conftest or app code, tested apart)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests  # noqa: F401 - loaded before the in-process runs snapshot sys.modules (see tests/aws/conftest.py)

ROOT = Path(__file__).resolve().parents[2]


def _blocks(doc: str, tests_only: bool) -> list[str]:
    found = re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)
    return [b for b in found if re.search(r"^def test_", b, flags=re.M)] if tests_only else found


def _tests_in(block: str) -> int:
    return len(re.findall(r"^def test_", block, flags=re.M))


# doc -> (fewest blocks it must have, only its test modules, run in a subprocess). A subprocess where an
# example starts real databases: an in-process run drops the modules it imported first, which breaks the outer
# session.
DOCS: dict[str, tuple[int, bool, bool]] = {
    "README.md": (2, True, True),
    "docs/drills.md": (1, True, True),
    "docs/aws.md": (7, False, False),
    "docs/rds.md": (7, False, True),
    "docs/rds-proxy-iam.md": (5, False, True),
    "docs/rds-proxy-aurora-iam.md": (6, False, True),
}
BLOCKS = {doc: _blocks(doc, tests_only) for doc, (_, tests_only, _) in DOCS.items()}


@pytest.mark.parametrize("doc", DOCS)
def test_the_doc_has_examples(doc: str) -> None:
    assert len(BLOCKS[doc]) >= DOCS[doc][0]
    assert all(_tests_in(b) for b in BLOCKS[doc]), f"{doc}: a python block with no test in it"


@pytest.mark.parametrize(("doc", "index"), [(d, i) for d, blocks in BLOCKS.items() for i in range(len(blocks))])
def test_doc_example_passes(pytester: pytest.Pytester, doc: str, index: int) -> None:
    block = BLOCKS[doc][index]
    stem = re.sub(r"\W", "_", Path(doc).stem.lower())
    pytester.makepyfile(**{f"test_{stem}_example_{index}": block})
    if DOCS[doc][2]:
        result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=300)
    else:
        result = pytester.runpytest("-q")
    result.assert_outcomes(passed=_tests_in(block))
