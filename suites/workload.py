"""Client workloads for drills: a few threads calling an operation in a loop, bounded in count and time."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class Workload:
    """``fn(process, i)`` called by ``threads`` threads every ``interval`` s (each its own counter ``i``)
    until ``stop()``, ``max_ops`` calls per thread, or ``max_time`` s. ``fn`` records its own history
    operations; an exception escaping it stops that thread and is re-raised by ``stop()``."""

    def __init__(self, fn: Callable[[int, int], None], *, threads: int = 1, interval: float = 0.01,
                 max_ops: int = 1_000_000, max_time: float = 300.0, name: str = "workload") -> None:
        if threads < 1 or interval < 0 or max_ops < 1 or max_time <= 0:
            raise ValueError("threads >= 1, interval >= 0, max_ops >= 1 and max_time > 0 are required")
        self.fn = fn
        self.interval = interval
        self.max_ops = max_ops
        self.max_time = max_time
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._loop, args=(p,), name=f"{name}-{p}", daemon=True)
                         for p in range(threads)]
        self.calls = [0] * threads

    def _loop(self, process: int) -> None:
        deadline = time.monotonic() + self.max_time
        for i in range(self.max_ops):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                self.fn(process, i)
            except BaseException as exc:
                self._errors.append(exc)
                logger.exception("workload thread %d stopped", process)
                return
            self.calls[process] += 1
            if self.interval:
                self._stop.wait(self.interval)

    def start(self) -> Workload:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for t in self._threads:
            with contextlib.suppress(RuntimeError):
                t.join(timeout)
        if self._errors:
            raise self._errors[0]

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def settle(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Wait up to ``timeout`` s for ``pred``; False (not an error) when it never holds: an app that does not
    recover is a finding for the checkers, not a crash of the drill."""
    from harness.wait import WaitTimeout, wait_until

    try:
        wait_until(pred, timeout, interval=interval, what="the workload to settle")
    except WaitTimeout:
        return False
    return True


def writes_after(history: Any, since: float, count: int) -> Callable[[], bool]:
    """A predicate: ``count`` successful writes invoked after ``since`` (monotonic)."""
    return lambda: sum(o.ok for o in history.operations("write") if o.invoke_time > since) >= count
