"""The process-wide runtime: run directory, host allocator, reaping of strays from killed runs."""
from __future__ import annotations

import atexit
import logging
import threading
from pathlib import Path

from harness import process
from harness.hosts import HostAllocator
from harness.state import RunDir, reap_strays, state_root

logger = logging.getLogger(__name__)


class Runtime:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_root()
        self.reaped = reap_strays(self.root)
        self.run = RunDir(self.root)
        self.hosts = HostAllocator(self.root / "hosts")
        self._unhook = process.on_child_spawn(self.run.register, self.run.unregister)

    def close(self) -> None:
        process.stop_all()
        self._unhook()
        self.hosts.close()
        self.run.close()


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The runtime of this process, made on first use (which reaps what killed runs left)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime()
            atexit.register(_close)
        return _runtime


def _close() -> None:
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None
