"""Thresholds: per-drill-kind defaults, strict parsing from strings / dicts, clear refusals, use by check_all."""
from __future__ import annotations

from typing import Any

import pytest
from evidence_kit import Script

from harness.config import load_settings
from harness.errors import ConfigError
from suites.checkers import check_all
from suites.thresholds import (
    KINDS,
    MultiAzFailoverThresholds,
    ThresholdError,
    Thresholds,
    thresholds_for,
)


def test_defaults_per_drill_kind_follow_aws_numbers() -> None:
    assert Thresholds().max_lost_writes == 0 and Thresholds().max_rto is None
    assert thresholds_for("rds-multi-az-failover").max_rto == 120.0
    assert thresholds_for("rds-cluster-failover").max_rto == 35.0
    assert thresholds_for("aurora-global").max_reader_lag == 1.0
    assert set(KINDS) >= {"generic", "rds-multi-az-failover", "aurora-failover", "dynamodb-global-table",
                          "read-replica", "region-outage"}


def test_sources_apply_in_order_with_units_and_aliases() -> None:
    t = MultiAzFailoverThresholds.parse(
        "max_rto = 30s, max-reader-lag=500ms\nmin_availability=99.5%",   # ini-style
        "max_rto=PT1M30S; max_rpo=none",                                # env
        {"max_lost_writes": 2, "min_availability": 0.9},                # CLI / code
    )
    assert (t.max_rto, t.max_reader_lag, t.max_rpo, t.max_lost_writes, t.min_availability) == (
        90.0, 0.5, None, 2, 0.9)
    assert Thresholds.parse("max_rto=2m").max_rto == 120.0 and Thresholds.parse("max_rto=1.5").max_rto == 1.5
    assert Thresholds.parse({"max_rto": 3}).max_rto == 3.0
    assert Thresholds.parse(None, "").to_dict()["drill_kind"] == "generic"


@pytest.mark.parametrize(("source", "needles"), [
    ({"max_rto": "fast"}, ["threshold max_rto", "expects seconds", "got 'fast' (str)"]),
    ("max_lost_writes=1.5", ["threshold max_lost_writes", "a whole number", "got '1.5' (str)"]),
    ({"max_lost_writes": 1.0}, ["threshold max_lost_writes", "got 1.0 (float)"]),
    ({"max_stale_writer_reads": True}, ["threshold max_stale_writer_reads", "got True (bool)"]),
    ({"max_rto": -1}, ["cannot be negative"]),
    ("min_availability=99.9", ["threshold min_availability", "did you mean 99.9%?"]),
    ({"min_availability": 2}, ["did you mean 2%?"]),
    ("max_lost_writes=none", ["threshold max_lost_writes", "got 'none'"]),
    ("max_rto", ["must look like name=value"]),
])
def test_wrong_types_are_refused_naming_threshold_type_and_value(source: Any, needles: list[str]) -> None:
    with pytest.raises(ThresholdError) as err:
        Thresholds.parse(source)
    for needle in needles:
        assert needle in str(err.value)


def test_constructor_checks_types_too_and_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"threshold max_rto \(generic\) expects seconds.*got 'fast' \(str\)"):
        Thresholds(max_rto="fast")  # type: ignore[arg-type]


def test_unknown_names_are_refused_with_the_known_list() -> None:
    with pytest.raises(ThresholdError) as err:
        thresholds_for("rds-multi-az-failover", "max_rt=3")
    text = str(err.value)
    assert "unknown threshold 'max_rt' for drill kind rds-multi-az-failover; did you mean max_rto?" in text
    assert "Known thresholds: max_rto, max_rpo, max_lost_writes" in text
    with pytest.raises(ThresholdError, match="unknown drill kind 'nope'; known: aurora-failover"):
        thresholds_for("nope")


def test_rows_for_reports() -> None:
    rows = {r["name"]: r for r in Thresholds(max_rto=5.0).rows()}
    assert rows["max_rto"]["value"] == 5.0 and rows["max_rto"]["unit"] == "seconds"
    assert rows["min_availability"]["unit"] == "fraction"


def test_check_all_applies_threshold_values(script: Script) -> None:
    script.write(1, 0.0, 0.1)
    script.write(2, 0.2, 0.3)
    script.final({1}, at=1.0)
    assert not check_all(script.h, thresholds=Thresholds()).valid
    assert check_all(script.h, thresholds=Thresholds.parse("max_lost_writes=1")).valid


def test_thresholds_from_settings_sources(pytester: pytest.Pytester) -> None:
    assert load_settings(env={"DBDRILL_THRESHOLDS": "max_rto=5s; min_availability=90%"}).thresholds == (
        "max_rto=5s; min_availability=90%")
    pytester.makepyfile(test_limits="""
        from suites.thresholds import thresholds_for

        def test_limits(dbdrill_settings):
            t = thresholds_for("rds-cluster-failover", dbdrill_settings.thresholds, {"max_lost_writes": 1})
            assert (t.max_rto, t.min_availability, t.max_lost_writes) == (5.0, 0.9, 1)
    """)
    pytester.makeini("[pytest]\ndbdrill_thresholds = max_rto=5s, min_availability=0.9\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    result = pytester.runpytest("--dbdrill-thresholds=fast")
    assert "bad value for --dbdrill-thresholds: expected name=value items" in result.stderr.str()
    result = pytester.runpytest("--dbdrill-thresholds=max_rto=fast")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*threshold max_rto (rds-cluster-failover) expects seconds*got 'fast' (str)*"])
