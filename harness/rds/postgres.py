"""PostgreSQL clusters for the emulated RDS: a per-version template (initdb once, then ``cp -a``), clusters on
their own loopback address run as the postgres user, admin access over a trusted Unix socket, and the reaper
of servers left by killed runs."""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.process import Executor
from harness.rds.pgbin import PgBinaries, chown_to_service, run_tool, service_env, service_user

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

ADMIN_USER = "rdsadmin"  # the superuser, as on RDS; reached only over the Unix socket
REPL_USER = "rdsrepladmin"  # streaming replication between emulated hosts
TEMPLATE_FORMAT = 4  # bump when the template's contents change
SPARE_DB = "dbdrill_spare"  # made in the template, renamed to the master database: no CREATE DATABASE per instance
AUTH_METHODS = ("scram-sha-256", "md5")
# Settings of every cluster. A test double, not a database to keep: fsync and full-page writes are off (a
# crash of the *machine* may corrupt it; a crash of postgres, which is what faults do, is still recovered
# exactly), memory is small, WAL segments are 1 MB so idle clusters stay small.
BASE_SETTINGS: dict[str, str] = {
    "max_connections": "100",
    "shared_buffers": "16MB",
    "work_mem": "4MB",
    "maintenance_work_mem": "16MB",
    # In the data dir, not /dev/shm: a SIGKILLed server (what crash faults do) would leave its segments there.
    "dynamic_shared_memory_type": "mmap",
    "huge_pages": "off",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "wal_level": "replica",
    "wal_log_hints": "on",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_keep_size": "64MB",
    "min_wal_size": "4MB",
    "max_wal_size": "64MB",
    "checkpoint_timeout": "30min",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "50ms",
    "wal_receiver_timeout": "10s",
    "wal_sender_timeout": "10s",
    "max_standby_streaming_delay": "-1",
    "max_worker_processes": "4",
    "max_parallel_workers": "0",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
    "autovacuum_naptime": "10s",
    "log_destination": "stderr",
    "logging_collector": "off",
    "log_line_prefix": "'%m [%p] %q%a '",
    "log_min_messages": "warning",
    "unix_socket_permissions": "0700",
    "datestyle": "'iso, mdy'",
    "timezone": "'UTC'",
    "lc_messages": "'C'",
}
_BOOTSTRAP_SQL = (
    "CREATE ROLE rds_superuser NOLOGIN",
    "GRANT pg_monitor, pg_signal_backend, pg_read_all_data, pg_write_all_data TO rds_superuser",
    "CREATE ROLE rds_iam NOLOGIN",  # as on RDS: its members log in with IAM auth tokens (harness/rds/iamauth.py)
    f"CREATE ROLE {REPL_USER} LOGIN REPLICATION PASSWORD {{password}}",
)
_AFTER_SQL = (f"CREATE DATABASE {SPARE_DB}",)
_PER_DB_SQL = ("GRANT ALL ON SCHEMA public TO rds_superuser WITH GRANT OPTION",)


def _conf_line(key: str, value: str) -> str:
    return f"{key} = {value}\n"


def quote_conf(value: str) -> str:
    """A string setting for postgresql.conf."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def hba(auth: str) -> str:
    if auth not in AUTH_METHODS:
        raise HarnessError(f"unknown password auth {auth!r}: use one of {', '.join(AUTH_METHODS)}")
    return ("local all all trust\n"
            "local replication all trust\n"
            f"host all all 127.0.0.0/8 {auth}\n"
            f"host replication all 127.0.0.0/8 {auth}\n")


class PgCluster:
    """One PostgreSQL server: data dir, its own internal address, a log, an Executor. Made by PgEngine."""

    def __init__(self, engine: PgEngine, name: str, root: Path, host: str, port: int = 5432) -> None:
        self.engine = engine
        self.name = name
        self.root = root
        self.host = host
        self.port = port
        self.data_dir = root / "data"
        self.socket_dir = root / "s"
        self.log_path = root / "postgres.log"
        self.executor: Executor | None = None
        self.settings: dict[str, str] = {}
        self.extra_settings: dict[str, str] = {}
        self.auth = "scram-sha-256"
        self.started_at: float | None = None

    # -- configuration (while stopped) ---------------------------------------------------------------
    def configure(self, settings: Mapping[str, str] | None = None, *, auth: str = "scram-sha-256",
                  auto: Mapping[str, str] | None = None) -> None:
        """Write postgresql.conf (base + own address + ``settings``), pg_hba.conf and postgresql.auto.conf
        (``auto``: the settings ALTER SYSTEM changes later, such as primary_conninfo)."""
        self.extra_settings = dict(settings or {})
        self.auth = auth
        self.settings = {**BASE_SETTINGS, "listen_addresses": quote_conf(self.host), "port": str(self.port),
                         "unix_socket_directories": quote_conf(str(self.socket_dir)),
                         "password_encryption": quote_conf(auth), "cluster_name": quote_conf(self.name),
                         **(settings or {})}
        (self.data_dir / "postgresql.conf").write_text("".join(_conf_line(k, v) for k, v in self.settings.items()))
        (self.data_dir / "pg_hba.conf").write_text(hba(auth))
        auto_text = "".join(_conf_line(k, v) for k, v in (auto or {}).items())
        (self.data_dir / "postgresql.auto.conf").write_text("# written by dbdrill; ALTER SYSTEM edits it\n" + auto_text)
        for f in ("postgresql.conf", "pg_hba.conf", "postgresql.auto.conf"):
            chown_to_service(self.data_dir / f)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> PgCluster:
        if self.running():
            return self
        self.socket_dir.mkdir(exist_ok=True)
        chown_to_service(self.socket_dir)
        for stale in ("postmaster.pid",):
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / stale).unlink()
        self.executor = Executor(
            f"postgres {self.name}", [str(self.engine.bins.postgres), "-D", str(self.data_dir)],
            ready=self._ready, log_path=self.log_path, timeout=timeout, env=service_env(), cwd=self.data_dir,
            user=service_user(), stop_signal=signal.SIGINT, pdeathsig=signal.SIGQUIT, stop_timeout=15.0,
            poll_interval=0.005)
        self.executor.start()
        self.started_at = time.monotonic()
        return self

    def _ready(self) -> bool:
        try:
            self.admin(connect_timeout=2).close()
            return True
        except Exception:
            return False

    def running(self) -> bool:
        return self.executor is not None and self.executor.running()

    @property
    def pid(self) -> int | None:
        return self.executor.pid if self.executor is not None else None

    def stop(self, mode: str = "fast", timeout: float = 15.0) -> None:
        """Shut down: "fast" (SIGINT: disconnect clients, checkpoint), "smart" (SIGTERM: wait for clients),
        "immediate" (SIGQUIT: no checkpoint; crash recovery at next start)."""
        sig = {"fast": signal.SIGINT, "smart": signal.SIGTERM, "immediate": signal.SIGQUIT}.get(mode)
        if sig is None:
            raise HarnessError(f"unknown shutdown mode {mode!r}: use fast, smart or immediate")
        if self.executor is not None:
            self.executor.stop(sig=sig, timeout=timeout)

    def freeze(self) -> None:
        """Stop every process of the server in its tracks (SIGSTOP to the group): its sockets stay open and
        nothing answers, as on a host that dropped off the network mid-flight. ``kill`` ends it."""
        if self.executor is not None:
            self.executor.signal(signal.SIGSTOP)

    def kill(self) -> None:
        """Crash: SIGKILL the postmaster and every backend at once."""
        if self.executor is not None:
            self.executor.kill()

    def remove(self) -> None:
        self.stop(mode="immediate", timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- admin access --------------------------------------------------------------------------------
    def admin(self, dbname: str = "postgres", *, connect_timeout: float = 5) -> psycopg.Connection[Any]:
        """A superuser connection over the Unix socket (trusted), autocommit."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=ADMIN_USER, dbname=dbname,
                               autocommit=True, connect_timeout=max(1, int(connect_timeout)))

    def sql(self, query: Any, params: Sequence[Any] | None = None, *,
            dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the admin; its rows (empty for statements without a result)."""
        with self.admin(dbname) as conn:
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description is not None else []

    def value(self, query: Any, params: Sequence[Any] | None = None) -> Any:
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def in_recovery(self) -> bool:
        return bool(self.value("SELECT pg_is_in_recovery()"))

    def reload(self) -> None:
        self.sql("SELECT pg_reload_conf()")

    def alter_system(self, **settings: str | None) -> None:
        """ALTER SYSTEM SET (None: RESET) each setting, then reload."""
        from psycopg import sql

        with self.admin() as conn:
            for key, value in settings.items():
                if value is None:
                    conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(key)))
                else:
                    conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(key),
                                                                           sql.Literal(value)))
            conn.execute("SELECT pg_reload_conf()")

    def create_master(self, user: str, password: str, dbname: str | None = None) -> None:
        """The RDS master user (member of rds_superuser, CREATEDB, CREATEROLE) and its database."""
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {} IN ROLE rds_superuser")
                         .format(sql.Identifier(user), sql.Literal(password)))
            if dbname and dbname != "postgres":
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(SPARE_DB),
                                                                             sql.Identifier(dbname)))
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname),
                                                                            sql.Identifier(user)))
            else:
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(SPARE_DB)))

    def dsn(self, user: str, password: str, dbname: str = "postgres", host: str | None = None,
            port: int | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=host or self.host, port=port or self.port, user=user, password=password,
                             dbname=dbname)

    def __repr__(self) -> str:
        return f"<PgCluster {self.name} {self.host}:{self.port} pid={self.pid}>"


class PgEngine:
    """Makes clusters from a template under ``base_dir``; ``address`` allocates each cluster's internal
    loopback address. One per reconciler (or test)."""

    def __init__(self, bins: PgBinaries, base_dir: Path, address: Callable[[str], str], *,
                 template_root: Path) -> None:
        self.bins = bins
        self.base_dir = base_dir
        self.address = address
        self.template_root = template_root
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.clusters: dict[str, PgCluster] = {}
        base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(base_dir, 0o755)
        self.template = build_template(bins, template_root)
        self.repl_password = (self.template / "repl-password").read_text().strip()

    def new_root(self, name: str) -> tuple[str, Path]:
        """A fresh short directory (Unix socket paths stay under 107 bytes) for cluster ``name``."""
        with self._lock:
            if name in self.clusters:
                raise HarnessError(f"a cluster named {name!r} exists already", obj=self.clusters[name])
            root = self.base_dir / f"c{next(self._ids)}"
        root.mkdir()
        os.chmod(root, 0o755)
        chown_to_service(root)
        sock = root / "s" / ".s.PGSQL.65535"
        if len(str(sock).encode()) >= 107:
            raise HarnessError(f"the Unix socket path {sock} is too long (>= 107 bytes): use a shorter "
                               "--dbdrill-state-dir")
        return name, root

    def register(self, cluster: PgCluster) -> PgCluster:
        with self._lock:
            self.clusters[cluster.name] = cluster
        return cluster

    def create_cluster(self, name: str, *, host: str | None = None, auth: str = "scram-sha-256",
                       settings: Mapping[str, str] | None = None, start: bool = True,
                       timeout: float = 30.0) -> PgCluster:
        """A new primary from the template (``cp -a``), on its own loopback address, started."""
        name, root = self.new_root(name)
        cluster = PgCluster(self, name, root, host or self.address(f"pg-{name}"))
        try:
            subprocess.run(["cp", "-a", str(self.template / "data"), str(cluster.data_dir)], check=True,
                           capture_output=True, timeout=60)
            cluster.configure(settings, auth=auth)
            self.register(cluster)
            if start:
                cluster.start(timeout)
        except BaseException:
            self.drop(cluster)
            raise
        return cluster

    def drop(self, cluster: PgCluster) -> None:
        """Stop (immediately) and delete a cluster."""
        cluster.remove()
        with self._lock:
            if self.clusters.get(cluster.name) is cluster:
                del self.clusters[cluster.name]

    def stop_all(self) -> None:
        with self._lock:
            clusters = list(self.clusters.values())
            self.clusters.clear()
        for cluster in clusters:
            try:
                cluster.remove()
            except Exception:
                logger.exception("removing %s failed", cluster)


# -- the template --------------------------------------------------------------------------------------
def build_template(bins: PgBinaries, root: Path) -> Path:
    """The template for ``bins``' version under ``root`` (made once, then reused by every run): an initdb'd
    data dir with the RDS roles. Built aside and renamed, under a file lock, so parallel workers share it."""
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(root, 0o755)
    final = root / f"pg{bins.version}-t{TEMPLATE_FORMAT}"
    if (final / "ready").exists():
        return final
    with FileLock(str(root / ".lock"), timeout=120):
        if (final / "ready").exists():
            return final
        t0 = time.perf_counter()
        build = root / f".build-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        build.mkdir()
        os.chmod(build, 0o755)
        chown_to_service(build)
        try:
            run_tool([str(bins.path("initdb")), "-D", str(build / "data"), "-U", ADMIN_USER, "--auth-local=trust",
                      "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--wal-segsize=1"],
                     cwd=build, timeout=120)
            password = secrets.token_urlsafe(18)
            _bootstrap(bins, build, password)
            (build / "repl-password").write_text(password + "\n")
            os.chmod(build / "repl-password", 0o600)
            (build / "ready").write_text(f"{bins.bindir}\n")
            build.rename(final)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        logger.info("PostgreSQL %s template built in %.2fs at %s", bins.version, time.perf_counter() - t0, final)
        return final


def _bootstrap(bins: PgBinaries, build: Path, repl_password: str) -> None:
    """Start the fresh cluster on a socket only and create the RDS roles."""
    sock = build / "s"
    sock.mkdir()
    chown_to_service(sock)
    argv = [str(bins.postgres), "-D", str(build / "data"), "-c", "listen_addresses=", "-c",
            f"unix_socket_directories={sock}", "-c", "port=5432", "-c", "fsync=off"]

    def connect(dbname: str = "postgres") -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(host=str(sock), port=5432, user=ADMIN_USER, dbname=dbname, autocommit=True,
                               connect_timeout=2)

    def ready() -> bool:
        try:
            connect().close()
            return True
        except Exception:
            return False

    ex = Executor("postgres template", argv, ready=ready, log_path=build / "bootstrap.log", timeout=60,
                  env=service_env(), cwd=build, user=service_user(), stop_signal=signal.SIGINT,
                  pdeathsig=signal.SIGQUIT)
    ex.start()
    try:
        from psycopg import sql

        for db in ("postgres", "template1"):
            with connect(db) as conn:
                for stmt in _BOOTSTRAP_SQL if db == "postgres" else ():
                    conn.execute(sql.SQL(stmt).format(password=sql.Literal(repl_password)))
                for stmt in _PER_DB_SQL:
                    conn.execute(sql.SQL(stmt))
        with connect() as conn:
            for stmt in _AFTER_SQL:
                conn.execute(sql.SQL(stmt))
    finally:
        ex.stop()
    shutil.rmtree(sock, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (build / "data" / "postmaster.pid").unlink()
