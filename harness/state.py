"""Per-run state directory: a locked run dir, a registry of the processes it started, and the reaper."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_STATE_DIR = "DBDRILL_STATE_DIR"


def state_root() -> Path:
    """The directory all runs share. Short (Unix socket paths must stay under 107 bytes) and
    reachable by the postgres user, so not pytest's tmp_path."""
    root = Path(os.environ.get(ENV_STATE_DIR) or f"/tmp/dbdrill-{os.getuid()}")
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(root, 0o755)
    return root


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it does not exist. Guards against
    killing a recycled pid."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: fields start after the last ')'.
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass(frozen=True)
class ChildRecord:
    pid: int
    start_time: int
    name: str


class RunDir:
    """A directory owned by one live run, held by an flock on ``lock``. A dead run's lock is free,
    which is how the reaper knows it may clean up."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_root()
        runs = self.root / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        self.path = runs / f"{os.getpid()}-{time.time_ns() // 1_000_000}"
        self.path.mkdir()
        os.chmod(self.path, 0o755)
        (self.path / "children").mkdir()
        self._lock_fd = os.open(self.path / "lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._mutex = threading.Lock()

    def register(self, pid: int, name: str) -> None:
        start = proc_start_time(pid)
        if start is None:
            return
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        try:
            (self.path / "children" / str(pid)).write_text(f"{start} {safe}\n")
        except OSError:
            logger.warning("cannot record child %s (pid %d) in %s", name, pid, self.path)

    def unregister(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "children" / str(pid)).unlink()

    def subdir(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def close(self) -> None:
        """Remove the run dir (children must be stopped already) and release the lock."""
        with self._mutex:
            if self._lock_fd < 0:
                return
            shutil.rmtree(self.path, ignore_errors=True)
            os.close(self._lock_fd)
            self._lock_fd = -1


def _children_of(run: Path) -> list[ChildRecord]:
    out = []
    for f in sorted((run / "children").glob("*")):
        try:
            start, name = f.read_text().split(maxsplit=1)
            out.append(ChildRecord(int(f.name), int(start), name.strip()))
        except (OSError, ValueError):
            continue
    return out


def _kill_group(rec: ChildRecord, deadline_s: float = 2.0) -> bool:
    """Kill a recorded child's process group if the pid still is that child. True if it was alive."""
    if proc_start_time(rec.pid) != rec.start_time:
        return False
    logger.warning("reaping stray %s (pid %d) left by a killed run", rec.name, rec.pid)
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, sig)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and proc_start_time(rec.pid) == rec.start_time:
            # A zombie of a dead parent is gone once init reaps it; poll its stat state.
            if _is_zombie(rec.pid):
                break
            time.sleep(0.01)
        if proc_start_time(rec.pid) != rec.start_time or _is_zombie(rec.pid):
            break
    return True


def _is_zombie(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return data[data.rindex(")") + 2 :].split()[0] == "Z"


def reap_strays(root: Path | None = None) -> list[ChildRecord]:
    """Clean up after runs that died without cleaning up (SIGKILL, OOM): kill the process groups
    they recorded and remove their directories. Runs still alive hold their lock and are skipped."""
    root = root or state_root()
    reaped: list[ChildRecord] = []
    runs = root / "runs"
    if not runs.is_dir():
        return reaped
    for run in runs.iterdir():
        lock = run / "lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            # A half-made dir with no lock: only remove it once it is clearly old.
            with contextlib.suppress(OSError):
                if time.time() - run.stat().st_mtime > 60 and stat.S_ISDIR(run.stat().st_mode):
                    shutil.rmtree(run, ignore_errors=True)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            for rec in _children_of(run):
                if _kill_group(rec):
                    reaped.append(rec)
            shutil.rmtree(run, ignore_errors=True)
        finally:
            os.close(fd)
    return reaped
