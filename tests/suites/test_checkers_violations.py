"""Checkers on histories with known violations (each caught, naming the operations) and clean ones."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from evidence_kit import Script

from faults.base import Fault, Timeline, recording
from suites.checkers import (
    Fence,
    Window,
    availability,
    check_all,
    data_loss,
    lost_writes,
    recovery,
    split_brain,
    stale_reads,
)
from suites.thresholds import Thresholds

Win = Callable[..., dict[str, Any]]


# -- lost writes ------------------------------------------------------------------------------------
def test_lost_acknowledged_write_is_named(script: Script) -> None:
    for v in range(1, 6):
        script.write(v, v * 0.1, v * 0.1 + 0.01)
    script.final({1, 2, 4, 5}, at=1.0)
    result = lost_writes(script.h)
    assert not result.valid
    assert result.numbers["lost"] == 1 and result.numbers["acknowledged"] == 5
    [v] = result.violations
    assert v.what == "lost write" and v.op is not None and v.op.invoke_value == 3
    with pytest.raises(AssertionError) as err:
        result.assert_valid()
    text = str(err.value)
    assert "1 of 5 acknowledged writes lost" in text
    assert "op #3 write 3 by process 0 [ok], invoked t=0.300s, completed t=0.310s" in text


def test_indeterminate_writes_may_go_either_way_failed_ones_may_not(script: Script) -> None:
    script.write(1, 0.1, 0.2)
    script.write(2, 0.2, 1.2, "info", error="TimeoutError")   # present: fine
    script.write(3, 0.3, 1.3, "info", error="TimeoutError")   # absent: fine
    script.write(4, 0.4, None)                                  # never completed: fine either way
    clean = Script()
    for args in ((1, 0.1, 0.2), (2, 0.2, 1.2, "info")):
        clean.write(*args)
    clean.final({1, 2}, at=2.0)
    assert lost_writes(clean.h).valid
    script.write(5, 0.5, 0.6, "fail", error="ConnectionRefusedError")
    script.final({1, 2, 5, 99}, at=2.0)
    result = lost_writes(script.h)
    assert not result.valid
    assert {v.what for v in result.violations} == {"failed write present", "unexpected value"}
    assert result.numbers["recovered_info"] == 1 and result.numbers["info_absent"] == 2
    assert "99 is in the final read but was never written" in result.message()


def test_writes_acked_after_the_final_read_started_are_not_expected(script: Script) -> None:
    script.write(1, 0.1, 0.2)
    script.write(2, 0.9, 1.5)  # acked after the final read began
    script.final({1}, at=1.0)
    result = lost_writes(script.h)
    assert result.valid and result.numbers["acked_after_final_read"] == 1


def test_no_final_read_is_a_clear_failure_and_last_read_is_the_fallback(script: Script) -> None:
    script.write(1, 0.1, 0.2)
    result = lost_writes(script.h)
    assert not result.valid and "record one with f='final-read'" in result.summary
    script.read({1}, 0.5, 0.6)
    assert lost_writes(script.h).valid


# -- stale reads ------------------------------------------------------------------------------------
def test_stale_writer_read_is_caught_with_the_missed_writes(script: Script) -> None:
    script.write(1, 0.0, 0.1)
    script.write(2, 0.2, 0.3)
    script.read({1, 2}, 0.4, 0.45, endpoint="writer.db")
    script.write(3, 0.5, 0.6)
    bad = script.read({1, 2}, 0.7, 0.75, endpoint="writer.db", node="127.0.0.5")  # misses 3, acked at 0.6
    script.read({1}, 0.8, 0.85, endpoint="reader.db")                             # a replica: lag, not a bug
    result = stale_reads(script.h, writer={"writer.db"})
    assert not result.valid and result.numbers["writer_stale"] == 1 and result.numbers["writer_reads"] == 2
    [v] = result.violations
    assert v.what == "stale writer read" and v.op is not None and v.op.id == bad
    assert "missed 1 acknowledged write(s) (3; oldest acked 0.100s before the read" in v.detail
    assert "via writer.db (127.0.0.5)" in result.message()


def test_reader_lag_in_ops_and_seconds_and_its_threshold(script: Script) -> None:
    for v in range(1, 11):  # write v acked at v/10 + 0.05
        script.write(v, v / 10, v / 10 + 0.05)
    script.read(set(range(1, 11)), 1.2, 1.25, endpoint="reader.db")   # up to date: lag 0
    script.read(set(range(1, 9)), 1.3, 1.35, endpoint="reader.db")    # misses 9 (acked 0.95), 10: 0.35 s, 2 ops
    script.read(set(range(1, 5)), 1.4, 1.45, endpoint="reader.db")    # misses 5..10: oldest 0.55 -> 0.85 s, 6 ops
    result = stale_reads(script.h, writer={"writer.db"})
    assert result.valid
    n = result.numbers
    assert (n["reader_reads"], n["reader_stale"], n["lag_ops_max"], n["lag_ops_p50"]) == (3, 2, 6, 2)
    assert n["lag_s_max"] == pytest.approx(0.85) and n["lag_s_p50"] == pytest.approx(0.35)
    assert n["lag_s_p99"] == pytest.approx(0.85)
    limited = stale_reads(script.h, writer={"writer.db"}, max_reader_lag=0.5)
    assert not limited.valid
    [v] = limited.violations
    assert v.what == "reader lag" and "0.850s / 6 write(s) behind" in v.detail
    assert not stale_reads(script.h, writer={"writer.db"}, max_reader_lag_ops=3).valid


def test_latest_value_model(script: Script) -> None:
    for v in range(1, 6):
        script.write(v, v, v + 0.5)
    script.read(5, 6.0, 6.1)                  # newest value 5: fresh
    stale = script.read(3, 6.2, 6.3)          # newest 3: missed 4 and 5
    result = stale_reads(script.h, model="latest")
    assert not result.valid and [v.op.id for v in result.violations if v.op] == [stale]
    assert "missed 2 acknowledged write(s) (4, 5;" in result.violations[0].detail


def test_roles_from_op_tags_when_no_writer_set_is_given(script: Script) -> None:
    script.write(1, 0.0, 0.1)
    script.read(set(), 0.5, 0.6, role="reader")
    assert stale_reads(script.h).valid
    script.read(set(), 0.7, 0.8)
    assert not stale_reads(script.h).valid


# -- split brain ------------------------------------------------------------------------------------
def test_split_brain_write_acked_by_a_fenced_primary(script: Script) -> None:
    script.write(1, 0.0, 0.1, node="old")
    script.write(2, 0.9, 1.05, node="old")       # in flight at the fence, acked 50 ms after it
    late = script.write(3, 1.2, 1.3, node="old")  # started and acked after the fence
    script.write(4, 1.2, 1.3, node="new")
    script.h.event("fence", node="old", time=1.0)
    result = split_brain(script.h)
    assert not result.valid and result.numbers["late_writes"] == 2
    assert [v.op.id for v in result.violations if v.op] == [2, late]
    assert "acknowledged by old 0.300s after it was fenced" in result.message()
    assert [v.op.id for v in split_brain(script.h, grace=0.1).violations if v.op] == [late]
    assert split_brain(script.h, [Fence("old", 2.0)]).valid
    assert split_brain(script.h, [{"node": "new", "time": 1.0}]).numbers["late_writes"] == 1


def test_split_brain_without_fences_is_skipped_not_silently_passed(script: Script) -> None:
    script.write(1, 0.0, 0.1)
    result = split_brain(script.h)
    assert result.valid and result.skipped and "no fence events" in result.summary


# -- recovery ---------------------------------------------------------------------------------------
def test_slow_recovery_is_caught_per_fault_window(script: Script, window: Win) -> None:
    t = 0.0
    while t < 10:
        if 2.0 <= t < 6.5:   # the outage: writes refused
            script.write(int(t * 10), t, t + 0.01, "fail", error="ConnectionRefusedError")
        else:
            script.write(int(t * 10), t, t + 0.02)
        script.read(None, t + 0.03, t + 0.04, type="fail" if 2.0 <= t < 5.0 else "ok")
        t = round(t + 0.1, 3)
    faults = [window("failover", 2.0, 3.0)]
    result = recovery(script.h, faults, max_rto=3.0)
    assert not result.valid
    [w] = result.numbers["windows"]
    assert w["rto_write_s"] == pytest.approx(4.52) and w["rto_read_s"] == pytest.approx(3.04)
    assert w["after_heal_s"] == pytest.approx(3.52) and w["errors_before_recovery"] == 45
    [v] = result.violations
    assert v.what == "slow recovery" and "4.520s after the start of fault failover on db" in v.detail
    assert v.op is not None and v.op.invoke_time == pytest.approx(6.5)
    assert recovery(script.h, faults, max_rto=5.0).valid


def test_never_recovered(script: Script, window: Win) -> None:
    script.write(1, 0.0, 0.1)
    script.write(2, 1.5, 1.6, "info")
    result = recovery(script.h, [window("outage", 1.0, None)])
    assert not result.valid and "no successful write after fault outage on db (t=1.000s..still active)" in (
        result.message())


# -- data loss --------------------------------------------------------------------------------------
def test_rpo_is_the_span_from_the_first_lost_write_to_the_fault(script: Script, window: Win) -> None:
    for i, v in enumerate(range(1, 11)):      # acked at 0.05, 0.15, ... 0.95
        script.write(v, i / 10, i / 10 + 0.05)
    script.final({1, 2, 3, 4, 5, 6, 9, 10}, at=3.0)   # 7 and 8 (acked 0.65, 0.75) lost in the fault at 1.0
    faults = [window("crash", 1.0, 1.5)]
    result = data_loss(script.h, faults)
    assert not result.valid and result.numbers["lost"] == 2
    assert result.numbers["rpo_s"] == pytest.approx(0.35)
    assert data_loss(script.h, faults, max_lost=2, max_rpo=0.5).valid
    tight = data_loss(script.h, faults, max_lost=2, max_rpo=0.2)
    assert [v.what for v in tight.violations] == ["data loss window"]
    assert tight.violations[0].op is not None and tight.violations[0].op.invoke_value == 7


# -- availability -----------------------------------------------------------------------------------
def test_availability_per_window(script: Script, window: Win) -> None:
    for i in range(20):
        t = i * 0.1
        script.write(i, t, t + 0.01, "fail" if 1.0 <= t < 1.5 and i % 5 != 0 else "ok")
    result = availability(script.h, [window("cut", 1.0, 1.5)], min_availability=0.5)
    [w] = result.numbers["windows"]
    assert (w["ops"], w["ok"]) == (6, 2) and w["availability"] == pytest.approx(2 / 6)
    assert result.numbers["overall"] == pytest.approx(16 / 20)
    assert not result.valid and "33.3% of 6 ops ok during fault cut" in result.message()
    assert availability(script.h, window=(0.0, 0.9), min_availability=1.0).valid


# -- all together -----------------------------------------------------------------------------------
def test_check_all_runs_what_applies_and_names_every_failure(script: Script, window: Win) -> None:
    script.write(1, 0.0, 0.1, node="old")
    script.write(2, 0.2, 0.3, node="old")
    script.write(3, 1.6, 1.7, node="new")
    script.read({1}, 0.5, 0.55, node="old")                    # stale: misses 2
    script.h.event("fence", node="old", time=1.0)
    script.write(4, 1.8, 1.9, node="old")                      # split brain
    script.final({1, 3, 4}, at=3.0)                            # 2 lost
    faults = [window("failover", 1.0, 1.2)]
    verdict = check_all(script.h, faults=faults, thresholds=Thresholds(max_rto=0.5))
    assert [r.name for r in verdict.failed] == ["lost-writes", "stale-reads", "split-brain", "recovery", "data-loss"]
    assert verdict["availability"].valid
    with pytest.raises(AssertionError) as err:
        verdict.assert_valid()
    text = str(err.value)
    assert text.startswith("5 of 6 checks failed")
    for needle in ("lost write: acknowledged write 2", "stale writer read", "split-brain write",
                   "slow recovery: first successful write 0.700s after"):
        assert needle in text
    relaxed = check_all(script.h, faults=faults, checks=["recovery", "availability"], thresholds={"max_rto": 1.0})
    assert relaxed.valid and [r.name for r in relaxed.results] == ["recovery", "availability"]


def test_check_all_skips_what_does_not_apply_but_refuses_when_asked(script: Script) -> None:
    script.write(1, 0.0, 0.1)
    verdict = check_all(script.h)
    assert verdict.valid
    assert {r.name: bool(r.skipped) for r in verdict.results} == {
        "lost-writes": True, "stale-reads": True, "split-brain": True, "recovery": True, "data-loss": True,
        "availability": False}
    asked = check_all(script.h, checks=["recovery"])
    assert not asked.valid and "was asked for but cannot run: no fault windows" in asked.message()
    with pytest.raises(ValueError, match="unknown check"):
        check_all(script.h, checks=["linearizable"])


class Blip(Fault):
    kind = "blip"

    def _inject(self) -> None:
        pass

    def _heal(self) -> None:
        pass


def test_windows_come_straight_from_a_fault_timeline() -> None:
    with recording(Timeline()) as tl, Blip(name="blip"):
        pass
    [w] = [Window.of(e) for e in tl.to_list()]
    assert w.name == "blip" and w.kind == "blip" and w.end is not None and w.end >= w.start
    assert Window.of(tl.events[0]) == w
    with pytest.raises(ValueError, match="no start_mono"):
        Window.of({"name": "x"})


def test_checkers_scale_to_drill_sized_histories(script: Script) -> None:
    n = 4000
    for v in range(n):
        script.write(v, v * 0.001, v * 0.001 + 0.0005)
        script.read(set(range(max(0, v - 3))), v * 0.001 + 0.0006, v * 0.001 + 0.0008, endpoint="reader")
    script.final(set(range(n)), at=10.0)
    t = time.perf_counter()
    verdict = check_all(script.h, writer={"writer"})
    elapsed = time.perf_counter() - t
    assert verdict.valid and verdict["stale-reads"].numbers["lag_ops_max"] == 4
    assert elapsed < 20.0, f"check_all over {len(script.h)} events took {elapsed:.2f}s"
