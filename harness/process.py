"""Executor for the services we start: readiness with a deadline, fail fast, log tail, process group,
parent-death signal, stop by signal + wait, atexit sweep."""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import pwd
import queue
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from harness.errors import ServiceError

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup(pdeathsig: int, parent_pid: int) -> Callable[[], None]:
    def setup() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, pdeathsig)
        # The parent may have died between fork and prctl: then nobody would send the signal.
        if os.getppid() != parent_pid:
            os._exit(1)

    return setup


class _Spawner:
    """Spawns every child from one long-lived thread. PR_SET_PDEATHSIG fires when the *thread* that
    forked the child exits, so children forked from short-lived threads (a request handler, a
    reconciler step) would die with them; this thread lives as long as the process."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is threading.main_thread():
            return fn()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="dbdrill-spawner", daemon=True)
                self._thread.start()
        fut: Future[Any] = Future()
        self._q.put((fn, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            fn, fut = self._q.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)


_spawner = _Spawner()
_live: weakref.WeakSet[Executor] = weakref.WeakSet()
_on_spawn: list[Callable[[int, str], None]] = []
_on_exit: list[Callable[[int], None]] = []


def on_child_spawn(register: Callable[[int, str], None], unregister: Callable[[int], None]) -> Callable[[], None]:
    """Hook for the run registry (so a killed run's children can be reaped by the next run).
    Returns the function that removes the hook."""
    _on_spawn.append(register)
    _on_exit.append(unregister)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            _on_spawn.remove(register)
        with contextlib.suppress(ValueError):
            _on_exit.remove(unregister)

    return remove


def running_as_root() -> bool:
    return os.geteuid() == 0


class Executor:
    """One child service. ``ready`` is polled until it returns True or ``timeout`` passes; if the
    child exits first, start fails at once. Errors carry the tail of the child's log."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool],
        log_path: Path,
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        pdeathsig: int = signal.SIGKILL,
        stop_timeout: float = 5.0,
        poll_interval: float = 0.005,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready = ready
        self.log_path = log_path
        self.timeout = timeout
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user if running_as_root() else None
        self.stop_signal = stop_signal
        self.pdeathsig = pdeathsig
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Executor:
        if self.running():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        if self.user:
            pw = pwd.getpwnam(self.user)
            with contextlib.suppress(OSError):
                os.chown(self.log_path, pw.pw_uid, pw.pw_gid)
        kwargs: dict[str, Any] = dict(
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env,
            cwd=self.cwd,
            preexec_fn=_child_setup(self.pdeathsig, os.getpid()),
        )
        if self.user:
            kwargs.update(user=self.user, group=pwd.getpwnam(self.user).pw_gid, extra_groups=[])
        try:
            self.proc = _spawner.call(lambda: subprocess.Popen(self.argv, **kwargs))
        except OSError as exc:
            raise ServiceError(f"{self.name}: cannot run {self.argv[0]}: {exc}", obj=self) from exc
        finally:
            log.close()
        _live.add(self)
        for hook in _on_spawn:
            hook(self.proc.pid, self.name)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.debug("%s ready (pid %d)", self.name, self.proc.pid)
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                err = ServiceError(f"{self.name} exited with code {code} while starting", obj=self)
                err.add_note(self.log_tail())
                raise err
            with contextlib.suppress(OSError):
                if self.ready():
                    return
            if time.monotonic() > deadline:
                err = ServiceError(f"{self.name} not ready after {self.timeout:.1f}s", obj=self)
                err.add_note(self.log_tail())
                raise err
            time.sleep(self.poll_interval)

    def signal(self, sig: int) -> None:
        """Signal the whole process group (the service and whatever it forked)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def stop(self, sig: int | None = None, timeout: float | None = None) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.signal(sig if sig is not None else self.stop_signal)
            try:
                proc.wait(timeout if timeout is not None else self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", self.name)
                self.signal(signal.SIGKILL)
                proc.wait(5)
        # Members of the group that outlived the leader (a postgres backend, say).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for hook in _on_exit:
            hook(proc.pid)
        _live.discard(self)

    def kill(self) -> None:
        """Die as a crash would: SIGKILL, no shutdown."""
        self.stop(sig=signal.SIGKILL, timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text[-lines:])
        return f"--- last {min(lines, len(text))} lines of {self.log_path} ---\n{tail}"

    def __enter__(self) -> Executor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Executor {self.name} pid={self.pid}>"


def stop_all() -> None:
    """Stop every live executor (atexit, and the plugin's session end)."""
    for ex in list(_live):
        with contextlib.suppress(Exception):
            ex.stop(timeout=3)


atexit.register(stop_all)
