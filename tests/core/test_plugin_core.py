"""The plugin as users meet it: options (CLI and ini), bad values, markers, cheap loading, healing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def test_option_from_cli_and_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_settings(dbdrill_settings, request):
            expected = request.config.getoption("--expected")
            assert ",".join(dbdrill_settings.regions) == expected
        """
    )
    pytester.makeconftest(
        "def pytest_addoption(parser):\n    parser.addoption('--expected')\n"
    )
    res = pytester.runpytest("--dbdrill-regions=eu-west-1,us-east-1", "--expected=eu-west-1,us-east-1")
    res.assert_outcomes(passed=1)
    pytester.makeini("[pytest]\ndbdrill_regions = ap-south-1\n")
    res = pytester.runpytest("--expected=ap-south-1")
    res.assert_outcomes(passed=1)


def test_bad_option_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    res = pytester.runpytest("--dbdrill-time-profile=slow")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--dbdrill-time-profile*expected one of fast, aws*"])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.dbdrill_drill("x")
        @pytest.mark.dbdrill_keep_state
        @pytest.mark.dbdrill_regions("us-east-1")
        @pytest.mark.slow
        def test_marked():
            pass
        """
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_options_listed_in_help(pytester: pytest.Pytester) -> None:
    res = pytester.runpytest("--help")
    res.stdout.fnmatch_lines(["*dbdrill*", "*--dbdrill-toxiproxy-url=URL*"])


def test_loading_the_plugin_imports_nothing_heavy(tmp_path: Path) -> None:
    (tmp_path / "test_trivial.py").write_text("def test_ok():\n    pass\n")
    code = (
        "import sys, pytest\n"
        "rc = pytest.main(['-q', '-p', 'no:cacheprovider', 'test_trivial.py'])\n"
        "heavy = [m for m in ('moto', 'boto3', 'botocore', 'psycopg', 'dnslib', 'matplotlib', 'requests')"
        " if m in sys.modules]\n"
        "assert rc == 0 and 'harness.plugin' in sys.modules, 'plugin not loaded'\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_fault_left_by_a_failing_test_is_healed_before_the_next(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from faults.base import Fault, active_faults

        class Flag(Fault):
            kind = "flag"
            on = False
            def _inject(self):
                Flag.on = True
            def _heal(self):
                Flag.on = False

        def test_fails_inside_a_started_fault():
            Flag().start()          # never stopped by the test
            assert False, "boom"

        def test_next_test_sees_no_fault():
            assert Flag.on is False
            assert active_faults() == []
        """
    )
    res = pytester.runpytest("-p", "no:randomly")
    res.assert_outcomes(passed=1, failed=1)


def test_works_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("i", range(4))
        def test_hosts(i, dbdrill_stack):
            addr = dbdrill_stack.hosts.allocate(f"h{i}")
            assert addr.startswith("127.")
        """
    )
    res = pytester.runpytest("-n", "2")
    res.assert_outcomes(passed=4)
