"""A controllable clock: follows real time by default, can be advanced or frozen by a test. Drives
TTL sweeps, IAM token expiry and DynamoDB capacity refill so tests never sleep for them."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Clock:
    """Emulated time = real monotonic time + offset (or a frozen instant), reported both as epoch
    seconds (``time``) and monotonic seconds (``monotonic``). ``advance`` moves time forward at once
    and tells subscribers (a TTL sweeper runs, a token bucket refills)."""

    def __init__(self, *, frozen: bool = False, start: float | None = None) -> None:
        self._lock = threading.RLock()
        # Anchored on the monotonic clock so a wall-clock step never moves emulated time.
        self._epoch0 = time.time() - time.monotonic()
        self._offset = 0.0 if start is None else start - time.time()
        self._frozen_at: float | None = None  # monotonic reading while frozen
        self._listeners: list[Callable[[float], None]] = []
        if frozen:
            self.freeze()

    def monotonic(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return time.monotonic() + self._offset

    def time(self) -> float:
        """Emulated epoch seconds."""
        return self._epoch0 + self.monotonic()

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def freeze(self) -> Clock:
        """Stop time where it is; only ``advance`` moves it."""
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = self.monotonic()
        return self

    def unfreeze(self) -> Clock:
        """Go on at real speed from the frozen instant."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.monotonic()
                self._frozen_at = None
        return self

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0), notify subscribers, return the new epoch time."""
        if seconds < 0:
            raise ValueError(f"Clock.advance needs seconds >= 0, got {seconds}: time never goes back")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds
            now = self.time()
            listeners = list(self._listeners)
        for cb in listeners:
            cb(now)
        return now

    def reset(self) -> None:
        """Back to real time, not frozen (the plugin does this between tests)."""
        with self._lock:
            self._offset = 0.0
            self._frozen_at = None

    def subscribe(self, cb: Callable[[float], None]) -> Callable[[], None]:
        """Call ``cb(now)`` after every advance; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(cb)

        def unsubscribe() -> None:
            with self._lock:
                if cb in self._listeners:
                    self._listeners.remove(cb)

        return unsubscribe
