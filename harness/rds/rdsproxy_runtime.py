"""The real side of an emulated RDS Proxy: a PgBouncer (transaction pooling) on an internal address, its endpoint
behind a fault proxy of its own (a DNS name like AWS's), and a server-side link proxy that points PgBouncer at the
target's current writer. Retargeting moves the link and cuts its connections, so a client in the middle of a
transaction on a writer that vanished gets an error at once instead of waiting on it (as RDS Proxy promises).
Target health (DescribeDBProxyTargets) is the target's state, its writer's reachability and a real login."""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.rds.pgbouncer import PgBouncer, PgBouncerConfig

if TYPE_CHECKING:
    from harness.rds.rdsproxy import RdsProxyExtension
    from harness.rds.reconciler import RdsReconciler
    from harness.toxiproxy import ToxiproxyClient

logger = logging.getLogger(__name__)

PORT = 5432
MAX_CLIENT_CONN = 1000
POINTER = "dbdrill-iam-socket"  # read by harness/rds/iamauth_check.py from PgBouncer's directory
_ids = itertools.count(1)
AVAILABLE, UNAVAILABLE = "AVAILABLE", "UNAVAILABLE"
_tracked_class: type | None = None


@dataclass(frozen=True)
class SecretAuth:
    """One ``Auth`` entry with its secret's login (read from Secrets Manager)."""

    secret_arn: str
    username: str
    password: str
    iam: bool = False
    client_auth: str = "scram-sha-256"


@dataclass(frozen=True)
class PoolConfig:
    """A target group's ConnectionPoolConfig (AWS defaults)."""

    max_connections_percent: int = 100
    max_idle_connections_percent: int = 50
    borrow_timeout: int = 120

    def limits(self, max_connections: int, reserved: int) -> tuple[int, int]:
        """(server pool size, idle connections kept) for a target with ``max_connections``, of which
        ``reserved`` are for superusers (RDS keeps those for rdsadmin; the proxy never gets them)."""
        usable = max(1, max_connections - reserved)
        size = max(1, math.floor(usable * self.max_connections_percent / 100))
        return size, min(size, math.floor(usable * self.max_idle_connections_percent / 100))


class ProxyBouncer(PgBouncer):
    """PgBouncer that may log in to the server as a fixed user (``server_login``): with IAM auth the client's
    password is a token, so the server login uses the secret's credentials instead."""

    server_login: tuple[str, str] | None = None

    def render(self) -> str:
        text = super().render()
        if self.server_login is None:
            return text
        user, password = self.server_login
        c = self.config
        target = f"host={c.target_host} port={c.target_port}"
        head, sep, rest = text.partition("[pgbouncer]")
        return head.replace(target, f"{target} user={user} password={password}") + sep + rest


@dataclass(eq=False)
class RunningProxy:
    """One DB proxy as dbdrill runs it."""

    name: str
    region: str
    endpoint: str
    address: str
    front_proxy: str
    link_proxy: str
    link_address: str
    bouncer: ProxyBouncer
    auth: list[SecretAuth]
    idle_client_timeout: int
    pool: PoolConfig = field(default_factory=PoolConfig)
    target: tuple[str, str] | None = None  # ("instance" | "cluster", identifier)
    writer: tuple[str, int] | None = None  # where the link points
    max_connections: tuple[int, int] = (100, 3)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def iam(self) -> bool:
        return any(a.iam for a in self.auth)

    @property
    def port(self) -> int:
        return PORT

    def __repr__(self) -> str:
        return f"<RunningProxy {self.region}/{self.name} {self.address}:{PORT} -> {self.writer}>"


def bouncer_config(p: RunningProxy, listen: tuple[str, int]) -> tuple[PgBouncerConfig, tuple[str, str] | None]:
    """PgBouncer settings from the proxy's: pool size from MaxConnectionsPercent of the target's max_connections,
    ConnectionBorrowTimeout -> query_wait_timeout, IdleClientTimeout -> client_idle_timeout; IAM -> PAM auth
    with the server login from the secret."""
    size, _ = p.pool.limits(*p.max_connections)
    login = None
    extra: dict[str, str] = {"server_idle_timeout": "60"}
    if p.iam:
        login = (p.auth[0].username, p.auth[0].password)
        extra["auth_type"] = "pam"
    config = PgBouncerConfig(
        listen_host=listen[0], listen_port=listen[1], target_host=p.link_address, target_port=PORT,
        users={} if p.iam else {a.username: a.password for a in p.auth}, pool_mode="transaction",
        max_client_conn=MAX_CLIENT_CONN, default_pool_size=size, max_db_connections=size,
        # 0 means "do not wait" on AWS; PgBouncer's 0 would mean "wait forever".
        query_wait_timeout=float(p.pool.borrow_timeout) or 0.001, client_idle_timeout=float(p.idle_client_timeout),
        server_login_retry=0.1, server_connect_timeout=2.0, auth_type=p.auth[0].client_auth if p.auth else "plain",
        extra=extra)
    return config, login


class ProxyRuntime:
    """Starts, reconfigures, retargets and stops the real parts of DB proxies."""

    def __init__(self, rec: RdsReconciler, proxies: ToxiproxyClient) -> None:
        self.rec = rec
        self.proxies = proxies

    def _allocate(self, what: str) -> str:
        return self.rec.stack.hosts.allocate(what)

    def build(self, name: str, region: str, endpoint: str, auth: list[SecretAuth], idle_client_timeout: int,
              pool: PoolConfig) -> RunningProxy:
        n = next(_ids)
        address = self._allocate(f"rdsproxy-{region}-{name}")
        inner = self._allocate(f"rdsproxy-inner-{region}-{name}")
        link = self._allocate(f"rdsproxy-link-{region}-{name}")
        root = self.rec.stack.runtime.run.subdir(f"px{n}")
        p = RunningProxy(name=name, region=region, endpoint=endpoint, address=address,
                         front_proxy=f"rdsproxy-{region}-{name}", link_proxy=f"rdsproxy-{region}-{name}-target",
                         link_address=link, bouncer=None, auth=auth,  # type: ignore[arg-type]
                         idle_client_timeout=idle_client_timeout, pool=pool)
        config, login = bouncer_config(p, (inner, PORT))
        p.bouncer = ProxyBouncer(f"rdsproxy-{name}-{n}", config, root)
        p.bouncer.server_login = login
        return p

    def start(self, p: RunningProxy, iam_realm: Any = None) -> None:
        """Link (no target yet: refused), PgBouncer, endpoint proxy, DNS name. Undone on failure."""
        try:
            self.proxies.create_proxy(p.link_proxy, listen=f"{p.link_address}:{PORT}", upstream=self._nowhere(p))
            if p.iam:
                self._prepare_iam(p, iam_realm)
            p.bouncer.start()
            host, port = p.bouncer.listen
            self.proxies.create_proxy(p.front_proxy, listen=f"{p.address}:{PORT}", upstream=f"{host}:{port}")
            self.publish(p)
        except BaseException:
            self.stop(p)
            raise

    def _nowhere(self, p: RunningProxy) -> str:
        return f"{p.link_address}:1"  # nothing listens there: server logins are refused until a target exists

    def _prepare_iam(self, p: RunningProxy, realm: Any) -> None:
        from harness.rds.pgbin import chown_to_service

        if realm is None or realm.socket_path is None:
            raise HarnessError(f"RDS Proxy {p.name}: IAM auth is not running", obj=p)
        realm.shared_service()
        p.bouncer.root.mkdir(parents=True, exist_ok=True)
        chown_to_service(p.bouncer.root)
        pointer = p.bouncer.root / POINTER
        pointer.write_text(str(realm.socket_path) + "\n")
        pointer.chmod(0o644)

    def publish(self, p: RunningProxy) -> None:
        self.rec.stack.dns.set_record(p.endpoint, "A", [p.address], ttl=self.rec.timings.dns_ttl)

    def stop(self, p: RunningProxy) -> None:
        with contextlib.suppress(Exception):
            self.rec.stack.dns.delete_record(p.endpoint)
        for name in (p.front_proxy, p.link_proxy):
            with contextlib.suppress(Exception):
                self.proxies.delete_proxy(name)
        if p.bouncer is not None:
            try:
                p.bouncer.stop()
            except Exception:
                logger.exception("stopping the PgBouncer of RDS Proxy %s failed", p.name)

    def configure(self, p: RunningProxy) -> None:
        """Apply the proxy's settings to the running PgBouncer (RELOAD)."""
        config, login = bouncer_config(p, p.bouncer.listen)
        p.bouncer.server_login = login
        p.bouncer.update(**{k: getattr(config, k) for k in (
            "users", "default_pool_size", "max_db_connections", "query_wait_timeout", "client_idle_timeout",
            "auth_type", "extra")})
        logger.info("RDS Proxy %s configured: pool %d, borrow timeout %ss, idle client timeout %ss", p.name,
                    config.default_pool_size, config.query_wait_timeout, config.client_idle_timeout)

    def point(self, p: RunningProxy, writer: tuple[str, int] | None) -> None:
        """The link goes to ``writer`` (None: nowhere); its open connections are cut so nothing waits on the old
        one. PgBouncer opens new server connections on demand (server_login_retry 0.1 s)."""
        upstream = f"{writer[0]}:{writer[1]}" if writer else self._nowhere(p)
        self.proxies.update_proxy(p.link_proxy, upstream=upstream)
        self.proxies.update_proxy(p.link_proxy, enabled=False)
        self.proxies.update_proxy(p.link_proxy, enabled=True)
        p.writer = writer
        logger.info("RDS Proxy %s now points at %s", p.name, upstream)


# -- target health, as DescribeDBProxyTargets reports it ----------------------------------------------------
def _unavailable(reason: str, description: str) -> dict[str, str]:
    return {"State": UNAVAILABLE, "Reason": reason, "Description": description}


def target_health(ext: RdsProxyExtension, p: RunningProxy) -> dict[str, str]:
    """``{"State", "Reason"?, "Description"?}`` of the proxy's target now."""
    if p.target is None:
        return _unavailable("UNREACHABLE", "The proxy has no registered target.")
    kind, ident = p.target
    if kind == "instance":
        inst = ext.rec.find(p.region, ident)
        if inst is None:
            return _unavailable("UNREACHABLE", f"DB instance {ident} does not exist (any more).")
        if inst.status != "available":
            return _unavailable("UNREACHABLE", f"DB instance {ident} is {inst.status}.")
        host = inst.primary
        if host.client_cuts or host.net_cuts:
            return _unavailable("CONNECTION_FAILED", f"DB instance {ident}'s writer is unreachable "
                                f"({', '.join(sorted(host.client_cuts | host.net_cuts))}).")
    if p.writer is None:
        return _unavailable("UNREACHABLE", f"No writer of {kind} {ident} is running.")
    import psycopg

    try:
        with ext.probe(p) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if "authentication failed" in text or "password" in text:
            return _unavailable("AUTH_FAILURE", f"The proxy cannot log in as {p.auth[0].username} with the secret "
                                f"{p.auth[0].secret_arn}: {text}")
        if "too many clients" in text:
            return _unavailable("PENDING_PROXY_CAPACITY", f"The target refused a new connection: {text}")
        return _unavailable("CONNECTION_FAILED", f"The proxy cannot connect to the target: {text}")
    return {"State": AVAILABLE}


def tracked(target: Any) -> Any:
    """Make moto's DBProxyTarget report ``dbdrill_health`` (its own is always AVAILABLE after one REGISTERING)."""
    global _tracked_class
    if _tracked_class is None:
        from moto.rds.models import DBProxyTarget

        class TrackedTarget(DBProxyTarget):
            dbdrill_health: dict[str, str] | None = None

            @property
            def registering(self) -> bool:
                return False

            @property
            def target_health(self) -> dict[str, str]:
                return self.dbdrill_health or {"State": AVAILABLE}

        _tracked_class = TrackedTarget
    if not isinstance(target, _tracked_class):
        target.__class__ = _tracked_class
    return target
