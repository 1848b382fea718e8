"""Nemesis: runs faults on a schedule (fixed offsets or seeded random gaps) in a background thread, and
always heals everything it started on stop, on error and on KeyboardInterrupt."""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faults.base import Fault, FaultError

logger = logging.getLogger(__name__)

FaultSpec = Fault | Callable[[], Fault]
MAX_STEPS = 10_000


@dataclass
class Step:
    """Start ``fault`` ``at`` seconds after the schedule starts and heal it ``duration`` seconds later.
    ``fault`` is a Fault or a zero-argument factory making one (called when the step starts)."""

    at: float
    duration: float
    fault: FaultSpec
    name: str | None = None

    def __post_init__(self) -> None:
        if self.at < 0 or self.duration < 0:
            raise FaultError(f"schedule step {self.label()}: at and duration must be >= 0, got at={self.at!r} "
                             f"duration={self.duration!r}")
        if not isinstance(self.fault, Fault) and not callable(self.fault):
            raise FaultError(f"schedule step {self.label()}: fault must be a Fault or a factory returning one, "
                             f"got {self.fault!r}")

    def label(self) -> str:
        if self.name:
            return self.name
        if isinstance(self.fault, Fault):
            return self.fault.name
        return getattr(self.fault, "__name__", type(self.fault).__name__)


@dataclass
class Ran:
    """What a step actually did: offsets in seconds from the schedule start."""

    name: str
    planned_at: float
    planned_duration: float
    started_at: float | None = None
    healed_at: float | None = None
    state: str = "planned"  # planned | active | healed | failed | skipped
    error: str | None = None
    fault: Fault | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "planned_at", "planned_duration", "started_at", "healed_at",
                                              "state", "error")}


def random_plan(factories: Sequence[Callable[[], Fault]], *, seed: int | None = None, min_gap: float = 1.0,
                max_gap: float = 5.0, min_duration: float = 1.0, max_duration: float = 5.0, max_faults: int = 10,
                max_time: float = 60.0, start_delay: float | None = None) -> list[Step]:
    """A reproducible random schedule: faults one after another, each after a gap drawn from
    [min_gap, max_gap] and lasting [min_duration, max_duration], at most ``max_faults`` and ending by
    ``max_time`` (the last duration is cut to fit). The first gap is ``start_delay`` when given."""
    if not factories:
        raise FaultError("random_plan needs at least one fault factory")
    for lo, hi, what in ((min_gap, max_gap, "gap"), (min_duration, max_duration, "duration")):
        if lo < 0 or hi < lo:
            raise FaultError(f"random_plan: need 0 <= min_{what} <= max_{what}, got {lo!r}..{hi!r}")
    if max_faults < 0 or max_faults > MAX_STEPS or max_time <= 0:
        raise FaultError(f"random_plan: need 0 <= max_faults <= {MAX_STEPS} and max_time > 0")
    rng = random.Random(seed)
    steps: list[Step] = []
    t = 0.0
    while len(steps) < max_faults:
        gap = start_delay if (start_delay is not None and not steps) else rng.uniform(min_gap, max_gap)
        t += gap
        duration = rng.uniform(min_duration, max_duration)
        factory = rng.choice(list(factories))
        if t >= max_time:
            break
        duration = min(duration, max_time - t)
        steps.append(Step(at=t, duration=duration, fault=factory,
                          name=f"{getattr(factory, '__name__', 'fault')}#{len(steps) + 1}"))
        t += duration
    return steps


class Nemesis:
    """Runs ``steps`` in a background thread. ``with Nemesis(steps):`` starts it and, on leaving (normal
    exit, exception, KeyboardInterrupt), stops it and heals every fault it started. ``wait()`` blocks
    until the plan is done. Steps may overlap. ``on_error="stop"`` (default) ends the schedule when a
    fault fails to start; ``"continue"`` records the error and goes on. Faults put their windows on the
    current fault timeline themselves; ``ran`` says what actually happened."""

    def __init__(self, steps: Sequence[Step], *, on_error: str = "stop", max_time: float | None = None,
                 name: str = "nemesis") -> None:
        if on_error not in ("stop", "continue"):
            raise FaultError(f"on_error must be 'stop' or 'continue', got {on_error!r}")
        if len(steps) > MAX_STEPS:
            raise FaultError(f"a schedule holds at most {MAX_STEPS} steps, got {len(steps)}")
        self.steps = sorted(steps, key=lambda s: s.at)
        self.on_error = on_error
        self.name = name
        end = max((s.at + s.duration for s in self.steps), default=0.0)
        self.max_time = end if max_time is None else max_time
        self.ran = [Ran(s.label(), s.at, s.duration) for s in self.steps]
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    @classmethod
    def random(cls, factories: Sequence[Callable[[], Fault]], *, seed: int | None = None, on_error: str = "stop",
               **plan: Any) -> Nemesis:
        """A nemesis over ``random_plan(factories, seed=..., **plan)``."""
        return cls(random_plan(factories, seed=seed, **plan), on_error=on_error, name=f"random-nemesis(seed={seed})")

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> Nemesis:
        if self._thread is not None:
            raise FaultError(f"{self.name} was already started; make a new Nemesis to run the plan again")
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        logger.info("%s started: %d step(s) over %.3fs", self.name, len(self.steps), self.max_time)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every step is done (True) or ``timeout`` passes (False)."""
        return self._done.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """End the schedule now and heal whatever it started (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("%s did not finish within %.1fs; healing from the caller", self.name, timeout)
        self._heal_all()

    def check(self) -> None:
        """Raise a FaultError if a step failed to start or heal."""
        if self.errors:
            failed = [r for r in self.ran if r.state == "failed"]
            raise FaultError(f"{self.name}: {len(self.errors)} step(s) failed: "
                             + "; ".join(f"{r.name}: {r.error}" for r in failed)) from self.errors[0]

    def __enter__(self) -> Nemesis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.stop()
        if exc is None:
            self.check()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    def elapsed(self) -> float:
        return time.monotonic() - self._t0 if self._thread is not None else 0.0

    def schedule(self) -> list[dict[str, Any]]:
        """What actually ran (planned and actual offsets, state, error), for the journal."""
        with self._lock:
            return [r.to_dict() for r in self.ran]

    # -- the thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        pending = list(range(len(self.steps)))
        active: list[int] = []
        try:
            while (pending or active) and not self._stop.is_set():
                now = self.elapsed()
                if now > self.max_time + 1.0:
                    logger.warning("%s over its time budget (%.3fs); stopping", self.name, self.max_time)
                    break
                for i in [i for i in active if self._due_heal(i, now)]:
                    active.remove(i)
                    self._heal(i)
                for i in [i for i in pending if self.steps[i].at <= now]:
                    pending.remove(i)
                    if self._inject(i):
                        active.append(i)
                    elif self.on_error == "stop":
                        pending.clear()
                nexts = [self.steps[i].at for i in pending]
                nexts += [self.steps[i].at + self.steps[i].duration for i in active]
                if nexts:
                    self._stop.wait(max(0.0, min(nexts) - self.elapsed()))
        except BaseException as exc:
            logger.exception("%s crashed", self.name)
            self.errors.append(exc)
        finally:
            self._heal_all()
            with self._lock:
                for r in self.ran:
                    if r.state == "planned":
                        r.state = "skipped"
            self._done.set()

    def _due_heal(self, i: int, now: float) -> bool:
        return self.steps[i].at + self.steps[i].duration <= now

    def _inject(self, i: int) -> bool:
        step, ran = self.steps[i], self.ran[i]
        try:
            fault = step.fault if isinstance(step.fault, Fault) else step.fault()
            if not isinstance(fault, Fault):
                raise FaultError(f"factory of step {step.label()} returned {fault!r}, not a Fault")
            with self._lock:
                ran.fault = fault
                if step.name is None and not isinstance(step.fault, Fault):
                    ran.name = fault.name  # a factory's product names the step better than the factory
            fault.start()
        except Exception as exc:
            logger.error("%s: step %s failed to start: %s", self.name, ran.name, exc)
            self.errors.append(exc)
            with self._lock:
                ran.state, ran.error, ran.started_at = "failed", f"{type(exc).__name__}: {exc}", self.elapsed()
                ran.fault = None
            return False
        with self._lock:
            ran.state, ran.started_at = "active", self.elapsed()
        return True

    def _heal(self, i: int) -> None:
        ran = self.ran[i]
        with self._lock:
            fault, ran.fault = ran.fault, None
        if fault is None:
            return
        try:
            fault.heal()
            state, error = "healed", None
        except Exception as exc:
            logger.error("%s: healing %s failed: %s", self.name, ran.name, exc)
            self.errors.append(exc)
            state, error = "failed", f"heal: {type(exc).__name__}: {exc}"
        with self._lock:
            ran.state, ran.error, ran.healed_at = state, error, self.elapsed()

    def _heal_all(self) -> None:
        for i in reversed(range(len(self.ran))):
            self._heal(i)
