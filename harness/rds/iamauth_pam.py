"""PAM service files for IAM database auth: ``/etc/pam.d/dbdrill-iam-<run>`` (PostgreSQL's ``pamservice``, one per
run) and ``/etc/pam.d/pgbouncer`` (PgBouncer's fixed service name, shared by every run and removed with its last
user), both running dbdrill's checker through pam_exec. Files of dead runs are reaped. Needs root."""
from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.rds.pgbin import service_user
from harness.state import proc_start_time

logger = logging.getLogger(__name__)

PAM_DIR = Path("/etc/pam.d")
PREFIX = "dbdrill-iam-"
SHARED = "pgbouncer"  # PgBouncer's PAM service name (compiled in)
MARK = "# dbdrill IAM database auth"
PAM_EXEC = ("/lib/x86_64-linux-gnu/security/pam_exec.so", "/usr/lib/x86_64-linux-gnu/security/pam_exec.so",
            "/lib/security/pam_exec.so", "/usr/lib64/security/pam_exec.so", "/lib64/security/pam_exec.so",
            "/usr/lib/security/pam_exec.so", "/usr/lib/aarch64-linux-gnu/security/pam_exec.so")
HOW = ("IAM database authentication on dbdrill runs PostgreSQL/PgBouncer 'pam' auth with a PAM service "
       f"file in {PAM_DIR}, which only root can write: run the tests (or dbdrill up) as root, e.g. in a "
       "container or CI job, or leave EnableIAMDatabaseAuthentication / IAMAuth off")


_ids = itertools.count(1)


class IamAuthUnavailable(HarnessError):
    """IAM database auth cannot run here (not root, no pam_exec, no usable Python for the checker)."""


def _me() -> str:
    """This process, as PAM files name their owner: pid and start time (a recycled pid is not us)."""
    return f"{os.getpid()}-{proc_start_time(os.getpid())}"


def _alive(owner: str) -> bool:
    pid, _, start = owner.partition("-")
    try:
        return str(proc_start_time(int(pid))) == start
    except ValueError:
        return False


def _owner_of(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if line.startswith(MARK):
                return line.rsplit(" ", 1)[-1]
    return None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def reap_stale(pam_dir: Path = PAM_DIR, users_dir: Path | None = None) -> list[Path]:
    """Remove the per-run service files of dead runs; with ``users_dir`` (hold ``shared_lock`` then) also the
    shared one when no live run uses it."""
    removed: list[Path] = []
    for path in pam_dir.glob(f"{PREFIX}*"):
        owner = _owner_of(path)
        if owner is not None and not _alive(owner):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    if users_dir is not None and users_dir.is_dir():
        for marker in users_dir.iterdir():
            if not _alive(marker.name):
                marker.unlink(missing_ok=True)
        shared = pam_dir / SHARED
        if not any(users_dir.iterdir()) and _owner_of(shared) is not None:
            shared.unlink(missing_ok=True)
            removed.append(shared)
    for path in removed:
        logger.info("removed the PAM service file %s of a dead run", path)
    return removed


def shared_lock(base: Path) -> Any:
    """The lock every run takes before touching the shared service file or its users."""
    from filelock import FileLock

    base.mkdir(parents=True, exist_ok=True)
    return FileLock(str(base / ".pam.lock"), timeout=30)


class PamServices:
    """The PAM side of one run. ``install()`` writes the run's service (for PostgreSQL), ``install_shared()`` the
    PgBouncer one; ``remove()`` at stop. ``state_root`` holds the checker script and the shared file's users."""

    def __init__(self, state_root: Path, socket_path: Path, *, pam_dir: Path = PAM_DIR) -> None:
        self.pam_dir = pam_dir
        self.base = state_root / "iam"
        self.users_dir = self.base / "pgbouncer-users"
        self.socket_path = socket_path
        self.owner = _me()
        self.service = f"{PREFIX}{os.getpid()}-{next(_ids)}"
        self.python: str | None = None
        self._mine: list[Path] = []
        self._shared = False

    @property
    def service_path(self) -> Path:
        return self.pam_dir / self.service

    def check(self) -> None:
        """IamAuthUnavailable unless this process can install PAM services (root, pam_exec present)."""
        if os.geteuid() != 0:
            raise IamAuthUnavailable(f"{HOW} (this process runs as uid {os.geteuid()}).")
        if not self.pam_dir.is_dir() or not os.access(self.pam_dir, os.W_OK):
            raise IamAuthUnavailable(f"{HOW} ({self.pam_dir} is missing or not writable).")
        if self._pam_exec() is None:
            raise IamAuthUnavailable(f"pam_exec.so not found (checked {', '.join(PAM_EXEC)}): install libpam-modules "
                                     "(apt-get install libpam-modules) for IAM database authentication.")

    @staticmethod
    def _pam_exec() -> str | None:
        return next((p for p in PAM_EXEC if Path(p).exists()), None)

    def _checker(self) -> Path:
        """The checker script where the service user can read it (the package may live under /root)."""
        spec = importlib.util.find_spec("harness.rds.iamauth_check")
        if spec is None or spec.origin is None:
            raise IamAuthUnavailable("harness.rds.iamauth_check is missing from the dbdrill installation")
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        target = self.base / "iamauth_check.py"
        source = Path(spec.origin).read_text()
        if not target.exists() or target.read_text() != source:
            _write(target, source)
        return target

    def _pick_python(self, checker: Path) -> str:
        """A Python the service user can run (a venv under /root is out of its reach)."""
        user = service_user()
        tried = []
        for cand in dict.fromkeys([sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]):
            if not cand or not Path(cand).exists():
                continue
            tried.append(cand)
            try:
                proc = subprocess.run([cand, "-I", "-S", "-c", "import json, socket"], user=user, timeout=20,
                                      capture_output=True, check=False)
            except (OSError, subprocess.SubprocessError):
                continue
            if proc.returncode == 0 and os.access(checker, os.R_OK):
                return cand
        raise IamAuthUnavailable(f"no Python the {user or 'server'} user can run for the IAM auth checker (tried "
                                 f"{', '.join(tried) or 'none'}): install python3 (apt-get install python3-minimal)")

    def _text(self, *args: str) -> str:
        assert self.python is not None
        checker = self.base / "iamauth_check.py"
        return (f"{MARK}; dbdrill removes this file when the run that wrote it ends. Owner {self.owner}\n"
                f"auth required {self._pam_exec()} expose_authtok quiet {self.python} -I -S {checker} {' '.join(args)}"
                "\naccount required pam_permit.so\n")

    def install(self) -> str:
        """The run's service for PostgreSQL's ``pamservice=``; returns its name. Idempotent."""
        if self.service_path in self._mine:
            return self.service
        self.check()
        reap_stale(self.pam_dir)
        checker = self._checker()
        self.python = self.python or self._pick_python(checker)
        _write(self.service_path, self._text(str(self.socket_path)))
        self._mine.append(self.service_path)
        logger.info("PAM service %s installed (IAM database auth)", self.service_path)
        return self.service

    def install_shared(self) -> None:
        """/etc/pam.d/pgbouncer for PgBouncers of any run (they find their run by their directory)."""
        if self._shared:
            return
        self.install()
        shared = self.pam_dir / SHARED
        with shared_lock(self.base):
            reap_stale(self.pam_dir, self.users_dir)
            if shared.exists() and _owner_of(shared) is None:
                raise IamAuthUnavailable(f"{shared} exists and is not dbdrill's: PgBouncer's PAM service name is "
                                         "fixed, so dbdrill cannot run IAM auth for RDS Proxy next to it; move it away")
            self.users_dir.mkdir(parents=True, exist_ok=True)
            (self.users_dir / self.owner).touch()
            if not shared.exists():
                _write(shared, self._text())
        self._shared = True

    def remove(self) -> None:
        for path in self._mine:
            if _owner_of(path) == self.owner:
                path.unlink(missing_ok=True)
        self._mine.clear()
        if self._shared:
            with shared_lock(self.base):
                (self.users_dir / self.owner).unlink(missing_ok=True)
                reap_stale(self.pam_dir, self.users_dir)
            self._shared = False
