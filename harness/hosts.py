"""Loopback host addresses: every emulated host gets its own 127.x.y.z, from a /16 block this process
claims with a file lock, so parallel runs and pytest-xdist workers never collide."""
from __future__ import annotations

import fcntl
import ipaddress
import os
import threading
from pathlib import Path

from harness.errors import HarnessError

# 127.0.x.x stays for other software (127.0.0.1 services, 127.0.1.1 hostname).
_FIRST_BLOCK = 20
_LAST_BLOCK = 250


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class HostAllocator:
    """Hands out addresses 127.B.y.z of one claimed block B. The same name always gets the same
    address within a run."""

    def __init__(self, lock_dir: Path) -> None:
        lock_dir.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self.block = -1
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        # Start the search at a worker-dependent block so workers rarely even contend for a lock.
        offset = int(worker[2:]) * 7 if worker.startswith("gw") and worker[2:].isdigit() else 0
        span = _LAST_BLOCK - _FIRST_BLOCK + 1
        for i in range(span):
            block = _FIRST_BLOCK + (offset + (os.getpid() % 5) + i) % span
            fd = os.open(lock_dir / f"127.{block}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fd, self.block = fd, block
            break
        else:
            raise HarnessError(f"no free loopback block 127.{_FIRST_BLOCK}-{_LAST_BLOCK}.0.0/16 in {lock_dir}")
        self._next = 1
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    def allocate(self, name: str | None = None) -> str:
        """A fresh address (or the one already given to ``name``)."""
        with self._lock:
            if name is not None and name in self._names:
                return self._names[name]
            n = self._next
            if n >= 254 * 256:
                raise HarnessError(f"loopback block 127.{self.block}.0.0/16 exhausted")
            self._next += 1
            addr = f"127.{self.block}.{n // 254}.{n % 254 + 1}"
            if name is not None:
                self._names[name] = addr
            return addr

    def lookup(self, name: str) -> str | None:
        return self._names.get(name)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
