"""Finding the PostgreSQL and PgBouncer binaries, and running short-lived tools as the postgres user."""
from __future__ import annotations

import functools
import glob
import logging
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import NotInstalledError, ServiceError
from harness.process import running_as_root

logger = logging.getLogger(__name__)

# The server binaries dbdrill runs; a directory is only taken when it has all of them.
REQUIRED = ("postgres", "initdb", "pg_basebackup")
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = ("Install PostgreSQL (Debian/Ubuntu: apt-get install postgresql), or point dbdrill at the "
                "directory holding postgres/initdb/pg_basebackup with --dbdrill-pg-bin=DIR (ini dbdrill_pg_bin, "
                "env DBDRILL_PG_BIN).")
# Services and tools run as this user when dbdrill runs as root: postgres and pgbouncer refuse root.
SERVICE_USER = "postgres"


@dataclass(frozen=True)
class PgBinaries:
    """One PostgreSQL installation: its bin directory and server version."""

    bindir: Path
    version: str
    major: int

    def path(self, name: str) -> Path:
        return self.bindir / name

    @property
    def postgres(self) -> Path:
        return self.bindir / "postgres"


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED)


def _pg_config_bindir() -> Path | None:
    exe = shutil.which("pg_config")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--bindir"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.strip()) if out.strip() else None


def _debian_dirs() -> list[Path]:
    def major(p: Path) -> tuple[int, str]:
        name = p.parent.name
        return (int(name), name) if name.isdigit() else (-1, name)

    return sorted((Path(p) for p in glob.glob(DEBIAN_GLOB)), key=major, reverse=True)


@functools.lru_cache(maxsize=8)
def _version(postgres: Path) -> tuple[str, int]:
    try:
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, timeout=10,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NotInstalledError(f"{postgres} --version failed ({exc}). {INSTALL_HINT}", obj=postgres) from exc
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not m:
        raise NotInstalledError(f"cannot read the version of {postgres} from {out.strip()!r}. {INSTALL_HINT}",
                                obj=postgres)
    return m.group(0), int(m.group(1))


def find_pg_bin(pg_bin: Path | None = None) -> PgBinaries:
    """The PostgreSQL binaries: ``pg_bin`` (the --dbdrill-pg-bin setting) if given — and then only that —
    else ``pg_config --bindir``, then PATH, then the newest /usr/lib/postgresql/*/bin. NotInstalledError
    says what was checked and how to fix it."""
    checked: list[str] = []
    if pg_bin is not None:
        given = Path(pg_bin)
        if _complete(given):
            return _binaries(given)
        missing = [n for n in REQUIRED if not os.access(given / n, os.X_OK)]
        raise NotInstalledError(
            f"PostgreSQL not found in the configured --dbdrill-pg-bin={given}: missing {', '.join(missing)}. "
            f"{INSTALL_HINT}", obj=given)
    candidates: list[tuple[str, Path | None]] = [("pg_config --bindir", _pg_config_bindir())]
    on_path = shutil.which("postgres")
    candidates.append(("PATH", Path(on_path).parent if on_path else None))
    candidates.extend((DEBIAN_GLOB, d) for d in _debian_dirs())
    for source, bindir in candidates:
        if bindir is None:
            checked.append(f"{source}: nothing")
            continue
        if _complete(bindir):
            logger.debug("PostgreSQL binaries from %s: %s", source, bindir)
            return _binaries(bindir)
        checked.append(f"{source}: {bindir} (incomplete)")
    if not any(s == DEBIAN_GLOB for s, _ in candidates):
        checked.append(f"{DEBIAN_GLOB}: nothing")
    raise NotInstalledError(f"PostgreSQL not found. Checked: {'; '.join(checked)}. {INSTALL_HINT}")


def _binaries(bindir: Path) -> PgBinaries:
    version, major = _version(bindir / "postgres")
    return PgBinaries(bindir=bindir, version=version, major=major)


def find_pgbouncer(path: Path | None = None) -> Path:
    """The pgbouncer executable (``path``, PATH, /usr/sbin); NotInstalledError with the fix otherwise."""
    candidates = [path] if path is not None else [
        Path(p) for p in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if p]
    for c in candidates:
        if c is not None and os.access(c, os.X_OK):
            return c
    raise NotInstalledError(
        f"PgBouncer not found (checked: {', '.join(str(c) for c in candidates) or 'PATH'}). Install it "
        "(Debian/Ubuntu: apt-get install pgbouncer).")


# -- running tools as the service user -------------------------------------------------------------------
def service_ids() -> tuple[int, int] | None:
    """(uid, gid) of the service user when running as root; None when services run as ourselves."""
    if not running_as_root():
        return None
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise NotInstalledError(
            f"running as root, but there is no {SERVICE_USER!r} user to run PostgreSQL as (it refuses root). "
            "Installing the postgresql package creates it, or: useradd --system postgres", obj=SERVICE_USER) from exc
    return pw.pw_uid, pw.pw_gid


def service_user() -> str | None:
    return SERVICE_USER if service_ids() is not None else None


def chown_to_service(path: Path) -> None:
    ids = service_ids()
    if ids is not None:
        os.chown(path, *ids)


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small, predictable environment for the servers and tools (no PG* variables of the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC")
    ids = service_ids()
    if ids is not None:
        env["HOME"] = pwd.getpwuid(ids[0]).pw_dir
        env["USER"] = env["LOGNAME"] = SERVICE_USER
    env.update(extra or {})
    return env


def run_tool(argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
             timeout: float = 60.0) -> str:
    """Run a short-lived PostgreSQL tool (initdb, pg_basebackup) as the service user; its output, or a
    ServiceError carrying that output."""
    kwargs: dict[str, object] = {}
    ids = service_ids()
    if ids is not None:
        kwargs.update(user=ids[0], group=ids[1], extra_groups=[])
    try:
        proc = subprocess.run(list(argv), cwd=cwd, env=service_env(env), capture_output=True, text=True,
                              timeout=timeout, **kwargs)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"{Path(argv[0]).name} did not finish in {timeout:g}s: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise ServiceError(f"{Path(argv[0]).name} failed (exit {proc.returncode}): {' '.join(argv)}\n"
                           f"{proc.stdout}{proc.stderr}")
    return str(proc.stdout)
