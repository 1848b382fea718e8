"""PgBouncer as a service: configuration from parameters (pool mode, limits, timeouts, auth), start/stop as
the postgres user, the admin console, and retargeting by rewriting [databases] + RELOAD (how an RDS Proxy
follows a failover without a DNS change)."""
from __future__ import annotations

import logging
import re
import secrets
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError, ServiceError
from harness.process import Executor
from harness.rds.pgbin import chown_to_service, find_pgbouncer, service_env, service_user

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

ADMIN_USER = "pgbouncer_admin"
POOL_MODES = ("session", "transaction", "statement")
AUTH_TYPES = ("scram-sha-256", "md5", "plain", "trust")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class PgBouncerConfig:
    """What a PgBouncer is told. ``users`` maps user -> password (the auth_file; PgBouncer logs in to the
    server with the same password). Timeouts in seconds. ``max_db_connections`` 0 = unlimited.
    ``extra``: any other [pgbouncer] setting, verbatim."""

    listen_host: str
    listen_port: int
    target_host: str
    target_port: int = 5432
    users: Mapping[str, str] = field(default_factory=dict)
    pool_mode: str = "transaction"
    max_client_conn: int = 100
    default_pool_size: int = 20
    max_db_connections: int = 0
    query_wait_timeout: float = 120.0
    client_idle_timeout: float = 0.0
    server_login_retry: float = 0.1
    server_connect_timeout: float = 2.0
    auth_type: str = "scram-sha-256"
    databases: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.pool_mode not in POOL_MODES:
            raise HarnessError(f"pool_mode must be one of {', '.join(POOL_MODES)}, got {self.pool_mode!r}")
        if self.auth_type not in AUTH_TYPES:
            raise HarnessError(f"auth_type must be one of {', '.join(AUTH_TYPES)}, got {self.auth_type!r}")
        for name, value in (("max_client_conn", self.max_client_conn), ("default_pool_size", self.default_pool_size)):
            if value < 1:
                raise HarnessError(f"{name} must be >= 1, got {value}")
        limits: tuple[tuple[str, float], ...] = (
            ("max_db_connections", self.max_db_connections), ("query_wait_timeout", self.query_wait_timeout),
            ("client_idle_timeout", self.client_idle_timeout), ("server_login_retry", self.server_login_retry),
            ("server_connect_timeout", self.server_connect_timeout))
        for name, limit in limits:
            if limit < 0:
                raise HarnessError(f"{name} must be >= 0, got {limit}")
        for name in [*self.users, *self.databases]:
            if not _NAME.match(name):
                raise HarnessError(f"user/database name {name!r} is not usable in a PgBouncer config: use letters, "
                                   "digits, _ . -")


def _q(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """One PgBouncer process. ``root`` holds its config, auth file, socket and log."""

    def __init__(self, name: str, config: PgBouncerConfig, root: Path, *, binary: Path | None = None) -> None:
        config.validate()
        self.name = name
        self.config = config
        self.root = root
        self.binary = binary or find_pgbouncer()
        self.socket_dir = root / "s"
        self.ini_path = root / "pgbouncer.ini"
        self.auth_path = root / "userlist.txt"
        self.log_path = root / "pgbouncer.log"
        self.admin_password = secrets.token_urlsafe(18)
        self.executor: Executor | None = None

    # -- config ---------------------------------------------------------------------------------------
    def render(self) -> str:
        c = self.config
        target = f"host={c.target_host} port={c.target_port}"
        dbs = "".join(f"{db} = {target} dbname={db}\n" for db in c.databases) or f"* = {target}\n"
        settings: dict[str, Any] = {
            "listen_addr": c.listen_host, "listen_port": c.listen_port, "unix_socket_dir": self.socket_dir,
            "auth_type": c.auth_type, "auth_file": self.auth_path, "admin_users": ADMIN_USER,
            "pool_mode": c.pool_mode, "max_client_conn": c.max_client_conn,
            "default_pool_size": c.default_pool_size, "max_db_connections": c.max_db_connections,
            "query_wait_timeout": c.query_wait_timeout, "client_idle_timeout": c.client_idle_timeout,
            "server_login_retry": c.server_login_retry, "server_connect_timeout": c.server_connect_timeout,
            "ignore_startup_parameters": "extra_float_digits,options", "so_reuseport": 0,
            "log_connections": 0, "log_disconnections": 0, **dict(c.extra),
        }
        body = "".join(f"{k} = {v}\n" for k, v in settings.items())
        return f"[databases]\n{dbs}\n[pgbouncer]\n{body}"

    def _write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        users = {**self.config.users, ADMIN_USER: self.admin_password}
        self.auth_path.write_text("".join(f"{_q(u)} {_q(p)}\n" for u, p in users.items()))
        self.auth_path.chmod(0o600)
        tmp = self.ini_path.with_suffix(".tmp")
        tmp.write_text(self.render())
        for p in (self.root, self.socket_dir, self.auth_path, tmp):
            chown_to_service(p)
        tmp.replace(self.ini_path)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> PgBouncer:
        if self.running():
            return self
        self._write()
        self.executor = Executor(f"pgbouncer {self.name}", [str(self.binary), str(self.ini_path)], ready=self._ready,
                                 log_path=self.log_path, timeout=timeout, env=service_env(), cwd=self.root,
                                 user=service_user(), stop_signal=signal.SIGINT, pdeathsig=signal.SIGTERM,
                                 stop_timeout=5.0)
        self.executor.start()
        return self

    def _ready(self) -> bool:
        try:
            self.show("VERSION")
            return True
        except Exception:
            return False

    def running(self) -> bool:
        return self.executor is not None and self.executor.running()

    def stop(self) -> None:
        """SIGINT: PgBouncer's safe shutdown (closes clients, exits)."""
        if self.executor is not None:
            self.executor.stop()

    def kill(self) -> None:
        if self.executor is not None:
            self.executor.kill()

    @property
    def listen(self) -> tuple[str, int]:
        return self.config.listen_host, self.config.listen_port

    # -- admin console --------------------------------------------------------------------------------
    def _admin(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.config.listen_port, dbname="pgbouncer",
                               user=ADMIN_USER, password=self.admin_password, autocommit=True, connect_timeout=2,
                               prepare_threshold=None, cursor_factory=psycopg.ClientCursor)

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run an admin console command (SHOW POOLS, RELOAD, PAUSE...); result rows as dicts."""
        with self._admin() as conn:
            # The admin console speaks only the simple query protocol: run it through libpq's PQexec.
            result = conn.pgconn.exec_(command.encode())
            if result.error_message:
                raise ServiceError(f"pgbouncer {self.name}: {command}: {result.error_message.decode().strip()}",
                                   obj=self)
            names = [(result.fname(i) or b"").decode() for i in range(result.nfields)]
            rows = []
            for r in range(result.ntuples):
                rows.append({names[i]: _decode(result.get_value(r, i)) for i in range(result.nfields)})
            return rows

    def show(self, what: str) -> list[dict[str, Any]]:
        return self.admin(f"SHOW {what}")

    def reload(self) -> None:
        self.admin("RELOAD")

    def retarget(self, host: str, port: int) -> None:
        """Point every database at ``host:port``: rewrite the config, RELOAD. Idle server connections to the
        old target are dropped; clients stay connected and their next transaction goes to the new one."""
        self.config = replace(self.config, target_host=host, target_port=port)
        self._write()
        self.reload()
        logger.info("pgbouncer %s retargeted to %s:%d", self.name, host, port)

    def update(self, **changes: Any) -> None:
        """Change settings (pool size, timeouts, users...) and RELOAD."""
        config = replace(self.config, **changes)
        config.validate()
        if (config.listen_host, config.listen_port) != (self.config.listen_host, self.config.listen_port):
            raise HarnessError("PgBouncer cannot change its listen address on RELOAD: stop and start a new one")
        self.config = config
        self._write()
        if self.running():
            self.reload()

    def __repr__(self) -> str:
        return f"<PgBouncer {self.name} {self.config.listen_host}:{self.config.listen_port} -> " \
               f"{self.config.target_host}:{self.config.target_port}>"


def _decode(value: bytes | None) -> Any:
    if value is None:
        return None
    text = value.decode()
    return int(text) if re.fullmatch(r"-?\d+", text) else text
