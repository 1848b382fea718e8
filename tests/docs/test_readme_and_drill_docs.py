"""The README's two commands exist in the Makefile and CI runs one; docs/drills.md's conftest example overrides
a drill's fixture as it says (their test-module examples run in test_doc_examples.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_names_the_two_commands_and_ci_runs_one() -> None:
    assert "make drill" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^drill: setup$", makefile, flags=re.M) and re.search(r"^test: setup$", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_drills_doc_conftest_example_overrides_the_drill(pytester: pytest.Pytester) -> None:
    """docs/drills.md's conftest: a user's reader replaces the drill's default (here: a module standing in
    for the user's app)."""
    doc = (ROOT / "docs" / "drills.md").read_text()
    conftest = next(b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "conftest.py" in b)
    pytester.makepyfile(**{"myapp/__init__.py": "", "myapp/sessions.py": (
        "import time\n"
        "def load_session(client, table, key):\n"
        "    item = client.get_item(TableName=table, Key={'pk': {'S': key}}, ConsistentRead=True).get('Item')\n"
        "    if item and float(item['expires']['N']) <= time.time():\n"
        "        return None\n"
        "    return item\n")})
    pytester.makeconftest(conftest)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--pyargs", "suites.ttl_expiry",
                                           timeout=300)
    result.assert_outcomes(passed=1)
