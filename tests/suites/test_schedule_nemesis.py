"""Nemesis schedules: fixed offsets and seeded random plans, always healed (stop, exception, Ctrl-C),
bounded; and a whole drill against a real server process that the nemesis crashes."""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from evidence_kit import KvCrash, KvService, Workers

from faults.base import Fault, FaultError, Timeline, active_faults, recording
from faults.schedule import Nemesis, Step, random_plan
from harness.wait import wait_until
from suites.checkers import check_all
from suites.history import FAIL, History
from suites.thresholds import Thresholds


class Flag(Fault):
    kind = "flag"

    def __init__(self, name: str = "flag", fail: bool = False) -> None:
        super().__init__(name=name)
        self.on = threading.Event()
        self.fail = fail
        self.injects = 0

    def _inject(self) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.injects += 1
        self.on.set()

    def _heal(self) -> None:
        self.on.clear()


def test_fixed_steps_run_at_their_offsets_for_their_durations() -> None:
    a, b = Flag("a"), Flag("b")
    with recording(Timeline()) as tl:
        nemesis = Nemesis([Step(at=0.25, duration=0.1, fault=b), Step(at=0.0, duration=0.15, fault=a)])
        with nemesis:
            assert nemesis.wait(10)
    assert not a.on.is_set() and not b.on.is_set() and active_faults() == []
    ea, eb = tl.events
    assert (ea.name, eb.name) == ("a", "b")
    assert eb.start_mono - ea.start_mono == pytest.approx(0.25, abs=0.1)
    assert ea.duration == pytest.approx(0.15, abs=0.1) and eb.duration == pytest.approx(0.1, abs=0.1)
    assert ea.end_mono is not None and ea.end_mono <= eb.start_mono
    ran = nemesis.schedule()
    assert [(r["name"], r["state"]) for r in ran] == [("a", "healed"), ("b", "healed")]
    assert ran[1]["started_at"] == pytest.approx(0.25, abs=0.1)


def test_overlapping_steps_and_factories() -> None:
    made: list[Flag] = []

    def factory() -> Flag:
        made.append(Flag(f"made{len(made)}"))
        return made[-1]

    with recording(Timeline()) as tl, Nemesis([Step(0.0, 0.3, factory), Step(0.1, 0.05, factory)]) as n:
        n.wait(10)
    assert [e.name for e in tl.events] == ["made0", "made1"]
    assert tl.events[1].end_mono is not None and tl.events[0].end_mono is not None
    assert tl.events[1].end_mono < tl.events[0].end_mono  # the short one sat inside the long one


def test_heals_everything_when_the_drill_body_raises() -> None:
    f = Flag()
    with pytest.raises(ZeroDivisionError), Nemesis([Step(0.0, 60.0, f)]):
        wait_until(f.on.is_set, 10, what="fault injected")
        _ = 1 / 0
    assert not f.on.is_set() and active_faults() == []


def test_heals_everything_on_keyboard_interrupt() -> None:
    f = Flag()
    nemesis = Nemesis([Step(0.0, 60.0, f), Step(30.0, 1.0, Flag("later"))])
    with pytest.raises(KeyboardInterrupt), nemesis:
        wait_until(f.on.is_set, 10, what="fault injected")
        raise KeyboardInterrupt
    assert not f.on.is_set() and active_faults() == []
    assert [r["state"] for r in nemesis.schedule()] == ["healed", "skipped"]


def test_stop_early_heals_and_is_idempotent() -> None:
    f = Flag()
    nemesis = Nemesis([Step(0.0, 60.0, f)]).start()
    wait_until(f.on.is_set, 10, what="fault injected")
    assert nemesis.running
    nemesis.stop()
    nemesis.stop()
    assert not f.on.is_set() and not nemesis.running
    with pytest.raises(FaultError, match="already started"):
        nemesis.start()


def test_a_failing_fault_stops_the_schedule_or_is_skipped_over() -> None:
    good = Flag("good")
    stopping = Nemesis([Step(0.0, 0.01, Flag("bad", fail=True)), Step(0.05, 0.01, good)])
    with pytest.raises(FaultError, match="bad: RuntimeError: bad cannot start"), stopping:
        stopping.wait(10)
    assert good.injects == 0 and [r["state"] for r in stopping.schedule()] == ["failed", "skipped"]
    going_on = Nemesis([Step(0.0, 0.01, Flag("bad", fail=True)), Step(0.05, 0.01, good)], on_error="continue")
    going_on.start()
    going_on.wait(10)
    going_on.stop()
    assert good.injects == 1 and len(going_on.errors) == 1
    with pytest.raises(FaultError, match="1 step"):
        going_on.check()


def test_bad_steps_are_refused() -> None:
    with pytest.raises(FaultError, match="at and duration must be >= 0"):
        Step(at=-1, duration=1, fault=Flag())
    with pytest.raises(FaultError, match="must be a Fault or a factory"):
        Step(at=0, duration=1, fault="flag")  # type: ignore[arg-type]
    not_a_fault: Callable[[], Any] = lambda: "nope"  # noqa: E731
    with pytest.raises(FaultError, match="returned 'nope', not a Fault"), Nemesis([Step(0, 0.01, not_a_fault)]) as n:
        n.wait(10)
    with pytest.raises(FaultError, match="on_error"):
        Nemesis([], on_error="ignore")


def test_random_plans_are_seeded_and_bounded() -> None:
    def net() -> Flag:
        return Flag("net")

    def crash() -> Flag:
        return Flag("crash")

    plan = dict(min_gap=0.5, max_gap=2.0, min_duration=0.5, max_duration=3.0, max_faults=50, max_time=20.0)
    a, b = random_plan([net, crash], seed=7, **plan), random_plan([net, crash], seed=7, **plan)
    assert [(s.at, s.duration, s.name) for s in a] == [(s.at, s.duration, s.name) for s in b]
    assert a != random_plan([net, crash], seed=8, **plan)
    assert {s.name.split("#")[0] for s in a} == {"net", "crash"}
    assert all(0.5 <= s.duration <= 3.0 or s is a[-1] for s in a)
    assert a[-1].at + a[-1].duration <= 20.0 + 1e-9 and len(a) < 50
    assert all(nxt.at - (cur.at + cur.duration) >= 0.5 - 1e-9 for cur, nxt in itertools.pairwise(a))
    assert len(random_plan([net], seed=1, max_faults=3, max_time=1e6)) == 3
    assert random_plan([net], seed=1, start_delay=0.0, max_faults=1)[0].at == 0.0
    with pytest.raises(FaultError, match="min_gap <= max_gap"):
        random_plan([net], min_gap=3, max_gap=1)
    with pytest.raises(FaultError, match="at least one fault factory"):
        random_plan([])


def test_random_nemesis_runs_its_plan() -> None:
    made: list[Flag] = []

    def flag() -> Flag:
        made.append(Flag(f"f{len(made)}"))
        return made[-1]

    with recording(Timeline()) as tl:
        nemesis = Nemesis.random([flag], seed=3, min_gap=0.01, max_gap=0.03, min_duration=0.01, max_duration=0.03,
                                 max_faults=4, max_time=5.0)
        with nemesis:
            assert nemesis.wait(10)
    assert len(made) == 4 and [e.name for e in tl.events] == ["f0", "f1", "f2", "f3"]
    assert all(r["state"] == "healed" for r in nemesis.schedule())


def _drill(kv: KvService, crash_at: float = 0.3, down_for: float = 0.5) -> tuple[History, Timeline]:
    history = History(name=kv.endpoint)
    with recording(Timeline()) as timeline:
        with Workers(kv, history) as w, Nemesis([Step(crash_at, down_for, KvCrash(kv))]) as nemesis:
            assert nemesis.wait(30), "the crash schedule did not finish"
            # Let the clients see the healed server for a moment before stopping them.
            seen_ok = len([op for op in history.operations("write") if op.ok])
            wait_until(lambda: len([op for op in history.operations("write") if op.ok]) > seen_ok + 20, 20,
                       what="writes succeeding again after the restart")
        w.final_read()
    return history, timeline


def test_drill_on_a_real_server_durable_crash_recovers_without_loss(kv_factory: Callable[[str], KvService]) -> None:
    kv = kv_factory("durable")
    history, timeline = _drill(kv)
    [window] = timeline.to_list()
    assert window["kind"] == "crash" and window["target"] == kv.node
    fails = [op for op in history.operations("write") if op.type == FAIL]
    assert fails and all("ConnectionRefusedError" in (op.error or "") for op in fails)
    verdict = check_all(history, faults=timeline.to_list(), thresholds=Thresholds(max_rto=20.0))
    verdict.assert_valid()
    rto = verdict["recovery"].numbers["windows"][0]["rto_write_s"]
    # Down for the planned 0.5 s at least; the window also covers the restart, which clients may beat.
    assert 0.5 <= rto < window["duration"] + 10.0
    assert verdict["availability"].numbers["windows"][0]["availability"] < 0.5
    assert verdict["lost-writes"].numbers["acknowledged"] > 50


def test_drill_on_a_real_server_lazy_crash_loses_acknowledged_writes(kv_factory: Callable[[str], KvService]) -> None:
    kv = kv_factory("lazy")
    history, timeline = _drill(kv)
    verdict = check_all(history, faults=timeline.to_list())
    assert not verdict.valid
    lost = verdict["lost-writes"]
    [final] = history.operations("final-read")
    acked = [op for op in history.operations("write") if op.ok and (op.complete_time or 0) < final.invoke_time]
    expected = {op.invoke_value for op in acked} - final.value
    crash_start = timeline.events[0].start_mono
    gone_before_crash = {op.invoke_value for op in acked if (op.complete_time or 0) < crash_start} - kv.values()
    assert gone_before_crash and gone_before_crash <= expected
    assert {v.op.invoke_value for v in lost.violations if v.op} == expected and lost.numbers["lost"] == len(expected)
    first_lost_ack = min(op.complete_time or 0 for op in acked if op.invoke_value in expected)
    assert verdict["data-loss"].numbers["rpo_s"] == pytest.approx(crash_start - first_lost_ack)
    assert verdict["data-loss"].numbers["rpo_s"] > 0.1
    stale = verdict["stale-reads"]
    assert not stale.valid and stale.numbers["writer_stale"] > 0  # reads after the restart miss acked values
