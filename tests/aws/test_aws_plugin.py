"""The AWS fixtures as users meet them (pytester): state reset per test unless kept, environment restored,
faults healed after a failing test, the endpoint started only for tests that ask for it."""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_state_is_reset_unless_kept(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def names(aws):
            return aws.client("dynamodb").list_tables()["TableNames"]

        @pytest.mark.dbdrill_keep_state
        def test_a_creates_and_keeps(aws, dynamodb_table):
            dynamodb_table("kept")
            assert names(aws) == ["kept"]

        def test_b_sees_it_then_resets(aws, dynamodb_table):
            assert names(aws) == ["kept"]
            dynamodb_table("second")

        def test_c_starts_clean(aws):
            assert names(aws) == []
        """
    )
    pytester.runpytest().assert_outcomes(passed=3)
    pytester.runpytest("--dbdrill-keep-state=true", "-k", "a_creates or b_sees").assert_outcomes(passed=2)


def test_env_is_restored_and_faults_are_healed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        import boto3

        def test_app_code_inside_env(aws_env, aws_faults):
            assert os.environ["AWS_ENDPOINT_URL"] == aws_env["AWS_ENDPOINT_URL"]
            boto3.client("dynamodb").list_tables()
            aws_faults.throttle("dynamodb").start()   # never healed by the test
            assert False, "fails inside the fault"

        def test_next_test_is_clean(aws):
            assert "AWS_ENDPOINT_URL" not in os.environ
            assert aws.fault_rules() == []
            assert aws.client("dynamodb").list_tables()["TableNames"] == []
        """
    )
    res = pytester.runpytest()
    res.assert_outcomes(passed=1, failed=1)


def test_endpoint_starts_only_when_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_plain(dbdrill_stack):
            assert not dbdrill_stack.started("aws endpoint")

        def test_with_aws(aws, dbdrill_stack):
            assert dbdrill_stack.started("aws endpoint")
            assert aws.endpoint_url("eu-west-1").startswith("http://127.")
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)
