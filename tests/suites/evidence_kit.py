"""Test helpers for the drill-evidence tests: a scripted-history builder, and a real set-of-values server
(child process on its own loopback address) with a crash fault and client workers that record history."""
from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path
from typing import Any

from kv_server import request

from faults.base import Fault
from harness.process import Executor
from harness.runtime import get_runtime
from suites.history import History

KV_SCRIPT = Path(__file__).with_name("kv_server.py")


class Script:
    """Builds a history with explicit times (seconds), for checkers' known-violation tests."""

    def __init__(self) -> None:
        self.h = History(t0=0.0, clock=lambda: 0.0, wall_clock=lambda: 1_700_000_000.0)

    def op(self, f: str, value: Any, start: float, end: float | None, type: str = "ok", *, result: Any = None,
           process: int | str = 0, endpoint: str | None = None, node: str | None = None,
           error: str | None = None, **extra: Any) -> int:
        inv = self.h.record(process, f, "invoke", value, time=start, endpoint=endpoint, node=node, **extra)
        if end is not None:
            self.h.record(process, f, type, result, id=inv.id, time=end, endpoint=endpoint, node=node, error=error)
        return inv.id

    def write(self, value: Any, start: float, end: float | None, type: str = "ok", **kw: Any) -> int:
        return self.op("write", value, start, end, type, **kw)

    def read(self, seen: Any, start: float, end: float, type: str = "ok", **kw: Any) -> int:
        return self.op("read", None, start, end, type, result=seen, **kw)

    def final(self, seen: Any, at: float) -> int:
        return self.op("final-read", None, at, at + 0.01, result=seen, process="final")


def fault_window(name: str, start: float, end: float | None, kind: str = "test") -> dict[str, Any]:
    return {"name": name, "kind": kind, "target": "db", "params": {}, "start": 1_700_000_000.0 + start,
            "start_mono": start, "end": None if end is None else 1_700_000_000.0 + end, "end_mono": end,
            "duration": None if end is None else end - start, "error": None}


class KvService:
    """One kv_server.py child. ``endpoint`` is a DNS-like name, ``node`` the address it really is."""

    def __init__(self, tmp: Path, mode: str) -> None:
        self.host = get_runtime().hosts.allocate()
        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"kv-{mode}.test.internal"
        self.node = f"{self.host}:{self.port}"
        self.executor = Executor(
            f"kv-{mode}", [sys.executable, str(KV_SCRIPT), self.host, str(self.port), str(tmp / "data.txt"), mode],
            ready=self._ready, log_path=tmp / "kv.log", timeout=20.0, stop_timeout=5.0,
        )

    def _ready(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=0.5):
            return True

    def values(self) -> set[int]:
        answer = request(self.host, self.port, "READ", timeout=5.0)
        assert answer.startswith("VALUES"), answer
        return {int(v) for v in answer[len("VALUES"):].strip().split(",") if v}


class KvCrash(Fault):
    """The server process is SIGKILLed (a crash); healing starts it again on the same address."""

    kind = "crash"

    def __init__(self, kv: KvService, name: str = "kv-crash") -> None:
        super().__init__(name=name)
        self.kv = kv

    def _inject(self) -> None:
        self.kv.executor.kill()

    def _heal(self) -> None:
        self.kv.executor.start()

    def target_label(self) -> str:
        return self.kv.node

    def describe(self) -> dict[str, Any]:
        return {"signal": "SIGKILL"}


class Workers:
    """Client threads that write increasing values and read the whole set, recording every op."""

    def __init__(self, kv: KvService, history: History, *, writers: int = 2, readers: int = 1,
                 pace: float = 0.004, limit: int = 5000) -> None:
        self.kv, self.history, self.pace, self.limit = kv, history, pace, limit
        self.stop_event = threading.Event()
        self.next_value = iter(range(1, 10**9))
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._write, args=(p,), daemon=True) for p in range(writers)]
        self.threads += [threading.Thread(target=self._read, args=(writers + p,), daemon=True) for p in range(readers)]

    def _value(self) -> int:
        with self.lock:
            return next(self.next_value)

    def _write(self, process: int) -> None:
        for _ in range(self.limit):
            if self.stop_event.is_set():
                return
            v = self._value()
            with self.history.op(process, "write", value=v, endpoint=self.kv.endpoint, node=self.kv.node) as op:
                answer = request(self.kv.host, self.kv.port, f"ADD {v}", timeout=1.0)
                if answer != "OK":
                    op.fail(answer)
            self.stop_event.wait(self.pace)

    def _read(self, process: int) -> None:
        for _ in range(self.limit):
            if self.stop_event.is_set():
                return
            with self.history.op(process, "read", endpoint=self.kv.endpoint, node=self.kv.node) as op:
                op.ok(self.kv.values())
            self.stop_event.wait(self.pace * 3)

    def __enter__(self) -> Workers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(10.0)

    def final_read(self) -> set[int]:
        with self.history.op("final", "final-read", endpoint=self.kv.endpoint, node=self.kv.node) as op:
            seen = self.kv.values()
            op.ok(seen)
        return seen
