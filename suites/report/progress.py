"""Terminal progress for long drills: elapsed time, operations, errors and active faults once a second."""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from faults.base import Timeline, active_faults
from suites.history import History

logger = logging.getLogger(__name__)

MAX_RUNTIME = 24 * 3600.0


class Progress:
    """Writes one status line per ``interval`` to ``stream`` (stderr by default) while a drill runs.
    Off unless ``stream`` is a TTY or ``force``; on a TTY the line is rewritten in place.
    ``with Progress(history, label="failover"):`` or ``start()`` / ``stop()``."""

    def __init__(self, history: History | None = None, *, stream: TextIO | None = None, interval: float = 1.0,
                 force: bool = False, timeline: Timeline | None = None, label: str = "",
                 max_runtime: float = MAX_RUNTIME, clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.history = history
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.timeline = timeline
        self.label = label
        self.max_runtime = max_runtime
        self._clock = clock
        self._tty = _isatty(self.stream)
        self.enabled = force or self._tty
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = clock()
        self.lines_written = 0

    def line(self) -> str:
        """The current status line."""
        elapsed = self._clock() - self._t0
        parts = [f"[{self.label}]" if self.label else "[dbdrill]", f"{elapsed:6.1f}s"]
        if self.history is not None:
            c = self.history.counts()
            parts.append(f"ops {c['total']} (ok {c['ok']}, fail {c['fail']}, info {c['info']})")
        if self.timeline is not None:
            active = [f"{e.name}({e.target})" if e.target else e.name for e in self.timeline.open_events()]
        else:
            active = [f.name + (f"({f.target_label()})" if f.target_label() else "") for f in active_faults()]
        parts.append("faults: " + (", ".join(active) if active else "none"))
        return "  ".join(parts)

    def _write(self, final: bool = False) -> None:
        text = self.line()
        try:
            if self._tty:
                self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self.lines_written += 1
        except (OSError, ValueError):
            logger.debug("progress stream closed; progress off")
            self._stop.set()

    def _run(self) -> None:
        deadline = self._t0 + self.max_runtime
        while not self._stop.wait(self.interval) and self._clock() < deadline:
            self._write()

    def start(self) -> Progress:
        self._t0 = self._clock()
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dbdrill-progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
            self._write(final=True)

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
