"""The rds fixtures as a user's test session sees them (pytester, in a subprocess): instances removed after
each test unless kept, faults of a failing test healed, nothing started for tests that do not ask."""
from __future__ import annotations

import pytest

INNER = '''
import sys
import pytest
from faults.database import fence

@pytest.mark.dbdrill_keep_state
def test_a_keep(postgres_instance):
    db = postgres_instance("kept")
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")

def test_b_still_there(rds, pg_connect):
    kept = rds.instance("kept")
    assert kept.status == "available"
    with pg_connect(kept) as conn:  # by its endpoint name, still served
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)

def test_c_gone(rds, aws):
    assert aws.client("rds").describe_db_instances()["DBInstances"] == []
    assert rds.instances == {}

def test_d_fails_inside_a_fault(postgres_instance):
    fence(postgres_instance("fenced")).start()
    pytest.fail("a failing test with a fault still on")

def test_e_healed(rds):
    assert rds._fences == {}
    assert rds.instances == {}
'''

LAZY = '''
import sys

def test_nothing_started(dbdrill_stack):
    assert not dbdrill_stack.started("rds reconciler")
    assert "harness.rds.reconciler" not in sys.modules and "psycopg" not in sys.modules
'''


@pytest.mark.slow
def test_fixtures_clean_up_and_keep_state(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner_rds=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=300)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*Failed: a failing test with a fault still on*"])


def test_nothing_starts_for_tests_that_do_not_ask(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner_lazy=LAZY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=120)
    result.assert_outcomes(passed=1)
