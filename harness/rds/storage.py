"""Where PostgreSQL data lives and what happens to it when a run dies: data dirs go to RAM (tmpfs /dev/shm)
when there is room — the copies and writes of short-lived test clusters then cost no disk I/O — else under
the run dir; servers and RAM dirs left by dead runs are found and removed at the next start."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SHM = Path("/dev/shm")
SHM_MIN_FREE = 2 << 30  # below this, data stays on disk (e.g. a container's 64 MB /dev/shm)


def shm_root(state_root: Path) -> Path:
    """The RAM dir of ``state_root``'s runs (one per state root, so runs of another root are never touched)."""
    tag = hashlib.sha1(str(state_root.resolve()).encode()).hexdigest()[:8]
    return SHM / f"dbdrill-{os.getuid()}-{tag}"


def ram_available() -> bool:
    """Is /dev/shm a tmpfs with room for cluster data?"""
    return _tmpfs_with_room(SHM)


def _tmpfs_with_room(path: Path) -> bool:
    try:
        with open("/proc/mounts") as mounts:
            fstype = next((line.split()[2] for line in mounts if line.split()[1] == str(path)), None)
        stat = os.statvfs(path)
    except OSError:
        return False
    return fstype == "tmpfs" and stat.f_bavail * stat.f_frsize >= SHM_MIN_FREE


def data_base_dir(state_root: Path, run_dir: Path, name: str = "rds") -> Path:
    """The directory for this run's cluster data: ``<shm_root>/<run>/<name>`` on a roomy tmpfs, else
    ``<run_dir>/<name>``. Mode 0755 all the way, so the postgres user reaches it."""
    base = run_dir / name
    if ram_available():
        root = shm_root(state_root)
        base = root / run_dir.name / name
        for d in (root, root / run_dir.name):
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o755)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    return base


def run_alive(run_dir: Path) -> bool:
    """True while the run owning ``run_dir`` holds its lock (this process included)."""
    try:
        fd = os.open(run_dir / "lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def reap_stray_postgres(state_root: Path) -> list[int]:
    """Kill PostgreSQL servers whose data dir belongs to a dead run of ``state_root`` (under its runs dir or
    its RAM dir): the ones the run registry missed. Found by /proc: the executable is named postgres and the
    working directory (its data dir) lies in a run dir whose run no longer holds its lock. Then the RAM
    dirs of dead runs are removed. Returns the pids signalled."""
    runs = (state_root / "runs").resolve()
    roots = [runs, shm_root(state_root)]
    victims: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if os.path.basename(exe.removesuffix(" (deleted)")) not in ("postgres", "postmaster"):
            continue
        run = _run_of(Path(cwd.removesuffix(" (deleted)")), roots)
        if run is not None and not run_alive(runs / run):
            victims.append(int(entry.name))
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        alive = [p for p in victims if _exists(p)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(_exists(p) for p in alive):
            time.sleep(0.01)
    if victims:
        logger.warning("reaped %d stray PostgreSQL process(es) of dead runs under %s: %s", len(victims), state_root,
                       victims)
    shm = shm_root(state_root)
    if shm.is_dir():
        for run_shm in shm.iterdir():
            if not run_alive(runs / run_shm.name):
                shutil.rmtree(run_shm, ignore_errors=True)
    return victims


def _run_of(path: Path, roots: list[Path]) -> str | None:
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        return rel.parts[0] if rel.parts else None
    return None


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2:].split()[0] != "Z"
