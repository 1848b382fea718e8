"""Fault base class (context manager + decorator, nestable, always healed) and the fault timeline."""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class FaultError(Exception):
    """A fault could not be injected or healed, or was asked for with bad parameters."""

    def __init__(self, message: str, *, fault: Any = None) -> None:
        super().__init__(message)
        self.fault = fault


@dataclass
class FaultEvent:
    """One window during which a fault was active. Times: epoch (``start``/``end``) for reports,
    monotonic (``start_mono``/``end_mono``) for durations."""

    name: str
    kind: str
    target: str
    params: dict[str, Any]
    start: float
    start_mono: float
    end: float | None = None
    end_mono: float | None = None
    error: str | None = None
    injected_mono: float | None = None  # when the injection had taken effect (start_mono is when it began)

    @property
    def duration(self) -> float | None:
        return None if self.end_mono is None else self.end_mono - self.start_mono

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["duration"] = self.duration
        return d


@dataclass
class Timeline:
    """Fault windows in the order they started. One per test (the plugin swaps it) or per drill."""

    events: list[FaultEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def open(self, fault: Fault) -> FaultEvent:
        ev = FaultEvent(
            name=fault.name, kind=fault.kind, target=fault.target_label(), params=fault.describe(),
            start=time.time(), start_mono=time.monotonic(),
        )
        with self._lock:
            self.events.append(ev)
        return ev

    def injected(self, ev: FaultEvent) -> None:
        with self._lock:
            ev.injected_mono = time.monotonic()

    def close(self, ev: FaultEvent, error: BaseException | None = None) -> None:
        with self._lock:
            ev.end, ev.end_mono = time.time(), time.monotonic()
            if error is not None:
                ev.error = f"{type(error).__name__}: {error}"

    def open_events(self) -> list[FaultEvent]:
        with self._lock:
            return [e for e in self.events if e.end is None]

    def to_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e.to_dict() for e in self.events]


_timeline = Timeline()
_timeline_lock = threading.Lock()
_active: dict[int, Fault] = {}
_active_lock = threading.Lock()


def current_timeline() -> Timeline:
    return _timeline


def set_timeline(timeline: Timeline) -> Timeline:
    """Make ``timeline`` the one new faults record on; returns the previous one."""
    global _timeline
    with _timeline_lock:
        prev, _timeline = _timeline, timeline
    return prev


@contextlib.contextmanager
def recording(timeline: Timeline | None = None) -> Iterator[Timeline]:
    tl = timeline or Timeline()
    prev = set_timeline(tl)
    try:
        yield tl
    finally:
        set_timeline(prev)


def active_faults() -> list[Fault]:
    with _active_lock:
        return list(_active.values())


def heal_all() -> list[Fault]:
    """Heal every fault still active (the plugin calls this after each test, pass or fail).
    Returns the faults that had to be healed."""
    healed = []
    for fault in reversed(active_faults()):
        try:
            fault.heal()
        except Exception:
            logger.exception("healing %s failed", fault)
        healed.append(fault)
    return healed


class Fault:
    """Base of every fault. Subclasses implement ``_inject`` and ``_heal`` (and ``describe`` for the
    timeline). ``start()`` returns self; entering twice is counted, and only the last exit heals.
    Use as ``with fault:``, ``fault.start() ... fault.stop()``, or ``@fault`` on a function."""

    kind: ClassVar[str] = "fault"

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name or self.kind
        self._depth = 0
        self._lock = threading.RLock()
        self._event: FaultEvent | None = None
        self._timeline: Timeline | None = None

    # -- to implement ----------------------------------------------------------------------------
    def _inject(self) -> None:
        raise NotImplementedError

    def _heal(self) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Parameters shown on the timeline and in reports."""
        return {}

    def target_label(self) -> str:
        return ""

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self._depth > 0

    def start(self) -> Fault:
        with self._lock:
            if self._depth == 0:
                self._timeline = current_timeline()
                event = self._timeline.open(self)
                try:
                    self._inject()
                except BaseException as exc:
                    # A half-made fault is healed before the error goes up.
                    with contextlib.suppress(Exception):
                        self._heal()
                    self._timeline.close(event, exc)
                    raise
                self._timeline.injected(event)
                self._event = event
                with _active_lock:
                    _active[id(self)] = self
                logger.info("fault %s injected %s", self.name, self.describe())
            self._depth += 1
        return self

    def stop(self) -> None:
        with self._lock:
            if self._depth == 0:
                return
            self._depth -= 1
            if self._depth == 0:
                self._do_heal()

    def heal(self) -> None:
        """Heal now, whatever the nesting depth."""
        with self._lock:
            if self._depth > 0:
                self._depth = 0
                self._do_heal()

    def _do_heal(self) -> None:
        error: BaseException | None = None
        try:
            self._heal()
        except BaseException as exc:
            error = exc
            raise
        finally:
            with _active_lock:
                _active.pop(id(self), None)
            if self._event is not None and self._timeline is not None:
                self._timeline.close(self._event, error)
            self._event = None
            logger.info("fault %s healed", self.name)

    def __enter__(self) -> Fault:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await fn(*args, **kwargs)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.target_label()} active={self.active}>"


class Composite(Fault):
    """Several faults as one (a region outage is every endpoint of the region cut). Injection is
    all-or-nothing: if one part fails, the parts already started are healed."""

    kind = "composite"

    def __init__(self, parts: Sequence[Fault], *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.parts = list(parts)
        self._started: list[Fault] = []

    def _inject(self) -> None:
        # Parts are not put on the timeline on their own: the composite is the window.
        for part in self.parts:
            with recording(Timeline()):
                part.start()
            self._started.append(part)

    def _heal(self) -> None:
        errors = []
        while self._started:
            part = self._started.pop()
            try:
                part.heal()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise FaultError(f"{self.name}: {len(errors)} part(s) failed to heal: {errors}", fault=self)

    def describe(self) -> dict[str, Any]:
        return {"parts": [p.name for p in self.parts]}
