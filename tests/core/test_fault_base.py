"""Fault base: context manager, decorator, nesting, healing on failure, timeline, composites."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from faults.base import Composite, Fault, FaultError, Timeline, active_faults, heal_all, recording


class Switch(Fault):
    kind = "switch"

    def __init__(self, name: str = "switch", fail_inject: bool = False, fail_heal: bool = False) -> None:
        super().__init__(name=name)
        self.on = False
        self.injects = 0
        self.heals = 0
        self.fail_inject = fail_inject
        self.fail_heal = fail_heal

    def _inject(self) -> None:
        self.injects += 1
        if self.fail_inject:
            raise RuntimeError("cannot inject")
        self.on = True

    def _heal(self) -> None:
        self.heals += 1
        self.on = False
        if self.fail_heal:
            raise RuntimeError("cannot heal")

    def describe(self) -> dict[str, Any]:
        return {"x": 1}

    def target_label(self) -> str:
        return "target-1"


def test_context_manager_injects_and_heals_and_records() -> None:
    with recording() as tl:
        f = Switch()
        with f as same:
            assert same is f and f.on and f.active
            assert active_faults() == [f]
        assert not f.on and f.heals == 1 and active_faults() == []
    [ev] = tl.events
    assert (ev.name, ev.kind, ev.target, ev.params) == ("switch", "switch", "target-1", {"x": 1})
    assert ev.end is not None and ev.duration is not None and ev.duration >= 0
    assert tl.to_list()[0]["duration"] == ev.duration


def test_heals_when_the_body_raises() -> None:
    f = Switch()
    with pytest.raises(ZeroDivisionError), f:
        _ = 1 / 0
    assert not f.on and f.heals == 1


def test_nesting_is_counted() -> None:
    f = Switch()
    with f:
        with f:
            assert f.injects == 1
        assert f.on, "inner exit must not heal"
    assert not f.on and f.heals == 1


def test_decorator_sync_and_async() -> None:
    f = Switch()

    @f
    def body() -> bool:
        return f.on

    assert body() is True and not f.on

    @f
    async def abody() -> bool:
        await asyncio.sleep(0)
        return f.on

    assert asyncio.run(abody()) is True and not f.on


def test_failed_injection_is_healed_and_recorded() -> None:
    with recording() as tl:
        f = Switch(fail_inject=True)
        with pytest.raises(RuntimeError, match="cannot inject"):
            f.start()
    assert not f.active and f.heals == 1 and active_faults() == []
    assert tl.events[0].error == "RuntimeError: cannot inject"


def test_heal_all_heals_leftovers() -> None:
    a, b = Switch("a"), Switch("b", fail_heal=True)
    a.start()
    b.start()
    healed = heal_all()
    assert {x.name for x in healed} == {"a", "b"}
    assert not a.on and not b.on and active_faults() == []


def test_composite_all_or_nothing() -> None:
    good, bad = Switch("good"), Switch("bad", fail_inject=True)
    comp = Composite([good, bad], name="region")
    with recording() as tl, pytest.raises(RuntimeError):
        comp.start()
    assert not good.on and good.heals == 1
    assert [e.name for e in tl.events] == ["region"], "parts are not separate windows"
    ok = Composite([Switch("p1"), Switch("p2")], name="az")
    with ok:
        assert all(p.on for p in ok.parts)
    assert not any(p.on for p in ok.parts)


def test_composite_heal_errors_are_reported() -> None:
    comp = Composite([Switch("p", fail_heal=True)], name="c")
    comp.start()
    with pytest.raises(FaultError, match="failed to heal"):
        comp.stop()
    assert not comp.active


def test_timeline_swap() -> None:
    tl = Timeline()
    with recording(tl):
        with Switch():
            assert len(tl.open_events()) == 1
        assert tl.open_events() == []
