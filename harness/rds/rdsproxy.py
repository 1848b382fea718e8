"""Emulated RDS Proxy: ``create_db_proxy`` (EngineFamily POSTGRESQL, Secrets Manager auth, IAM auth) and
``register_db_proxy_targets`` run a real PgBouncer in front of the target's writer (harness/rds/rdsproxy_runtime.py);
the pool follows the target group's ConnectionPoolConfig, ``modify_db_proxy`` / ``modify_db_proxy_target_group``
take effect at once, ``describe_db_proxy_targets`` reports real target health, and on the target's failover the
proxy follows the new writer while its clients keep the endpoint."""
from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.rds.api import ApiError
from harness.rds.rdsproxy_api import ProxyApi
from harness.rds.rdsproxy_runtime import PoolConfig, ProxyRuntime, RunningProxy, SecretAuth
from harness.rds.reconciler import RdsExtension

if TYPE_CHECKING:
    from harness.rds.fleet import Instance
    from harness.rds.reconciler import RdsReconciler

logger = logging.getLogger(__name__)

SUPPORTED_FAMILIES = ("POSTGRESQL",)
CLIENT_AUTH = {"POSTGRES_SCRAM_SHA_256": "scram-sha-256", "POSTGRES_MD5": "md5"}
_PASSWORD_OK = re.compile(r"^[^\s'\"\\]+$")


class RdsProxyExtension(RdsExtension):
    """The DB proxies of one reconciler, keyed by (region, name)."""

    def __init__(self, rec: RdsReconciler) -> None:
        self.rec = rec
        self.proxies: dict[tuple[str, str], RunningProxy] = {}
        self.lock = threading.RLock()
        self._runtime: ProxyRuntime | None = None
        self.api = ProxyApi(self)

    @property
    def runtime(self) -> ProxyRuntime:
        if self._runtime is None:
            from harness.toxiproxy import ToxiproxyClient

            shared = self.rec.stack.toxiproxy
            # Our own client (as the fleet has): per-test resets of the shared one must not drop our proxies.
            self._runtime = ProxyRuntime(self.rec, ToxiproxyClient(shared.url, shared.timeout, prefix=shared.prefix))
        return self._runtime

    def handlers(self, base: dict[str, Any]) -> dict[str, Any]:
        return self.api.handlers()

    # -- lookup ----------------------------------------------------------------------------------------------
    def find(self, region: str, name: str) -> RunningProxy | None:
        with self.lock:
            return self.proxies.get((region, name))

    def proxy(self, name: str, region: str | None = None) -> RunningProxy:
        """The running proxy ``name`` (in ``region``, or the only one of that name)."""
        from harness.errors import HarnessError

        with self.lock:
            found = [p for (r, n), p in self.proxies.items() if n == name and region in (None, r)]
        if len(found) != 1:
            raise HarnessError(f"no single running DB proxy {name!r}{' in ' + region if region else ''}: create it "
                               "with create_db_proxy first (or pass region=)", obj=self)
        return found[0]

    # -- secrets and auth ------------------------------------------------------------------------------------
    def read_secret(self, arn: str, region: str) -> tuple[str, str]:
        """The secret's username and password (JSON {"username", "password"}), from moto's Secrets Manager."""
        secret_region = arn.split(":")[3] if arn.startswith("arn:") and arn.count(":") >= 6 else region
        how = ("create it with secretsmanager create_secret(Name=..., SecretString='{\"username\": \"...\", "
               "\"password\": \"...\"}') and pass its ARN as Auth[].SecretArn")
        aws = self.rec.aws
        try:
            with aws.lock:
                value = aws.backend("secretsmanager", secret_region).get_secret_value(arn, None, None)
        except Exception:
            raise ApiError("InvalidParameterValue", f"The secret {arn!r} in Auth was not found in Secrets Manager "
                           f"({secret_region}): {how}.") from None
        try:
            data = json.loads(value.get("SecretString") or "")
            username, password = str(data["username"]), str(data["password"])
        except (ValueError, KeyError, TypeError):
            raise ApiError("InvalidParameterValue", f"The secret {arn!r} must hold JSON with \"username\" and "
                           "\"password\" (as RDS Proxy reads it).") from None
        return username, password

    def auth_entries(self, entries: list[dict[str, str]], region: str) -> list[SecretAuth]:
        if not entries:
            raise ApiError("InvalidParameterValue", "Auth must name at least one Secrets Manager secret "
                           "(Auth=[{'AuthScheme': 'SECRETS', 'SecretArn': ...}]).")
        out = []
        for entry in entries:
            scheme = entry.get("AuthScheme", "SECRETS")
            if scheme != "SECRETS":
                raise ApiError("InvalidParameterValue", f"AuthScheme {scheme!r} is not supported: use SECRETS.")
            arn = entry.get("SecretArn")
            if not arn:
                raise ApiError("InvalidParameterValue", "Auth[].SecretArn is required: the Secrets Manager secret "
                               "with the database login the proxy uses.")
            iam = entry.get("IAMAuth", "DISABLED").upper()
            if iam not in ("DISABLED", "REQUIRED", "ENABLED"):
                raise ApiError("InvalidParameterValue", f"IAMAuth {iam!r} is not valid: DISABLED, REQUIRED or ENABLED.")
            kind = entry.get("ClientPasswordAuthType", "POSTGRES_SCRAM_SHA_256")
            if kind not in CLIENT_AUTH:
                raise ApiError("InvalidParameterValue", f"ClientPasswordAuthType {kind!r} is not valid for "
                               f"EngineFamily POSTGRESQL: use {' or '.join(CLIENT_AUTH)}.")
            username, password = self.read_secret(arn, region)
            out.append(SecretAuth(arn, username, password, iam=iam != "DISABLED", client_auth=CLIENT_AUTH[kind]))
        if any(a.iam for a in out):
            if len(out) > 1:
                raise ApiError("InvalidParameterCombination", "dbdrill's RDS Proxy supports IAMAuth with one Auth "
                               "entry (PgBouncer logs in to the database as one user when clients use tokens): "
                               "use one secret, or IAMAuth=DISABLED.")
            if not _PASSWORD_OK.match(out[0].password):
                raise ApiError("InvalidParameterValue", "With IAMAuth the secret's password must not contain "
                               "spaces, quotes or backslashes (it goes into PgBouncer's connect string).")
            from harness.rds.iamauth import authority
            from harness.rds.iamauth_pam import IamAuthUnavailable

            try:
                authority(self.rec).check_available()
            except IamAuthUnavailable as exc:
                raise ApiError("InvalidParameterCombination", f"dbdrill: {exc}") from None
        return out

    # -- targets -------------------------------------------------------------------------------------------
    def writer_of(self, p: RunningProxy) -> tuple[str, int] | None:
        """Where the target's writer is reached now (its host's address), or None."""
        if p.target is None:
            return None
        kind, ident = p.target
        if kind == "instance":
            inst = self.rec.find(p.region, ident)
            return inst.primary.endpoint if inst is not None else None
        for ext in self.rec.extensions:
            resolve: Callable[[str, str], tuple[str, int] | None] | None = getattr(ext, "cluster_writer", None)
            if resolve is not None:
                found = resolve(p.region, ident)
                if found is not None:
                    return found
        return None

    def target_limits(self, p: RunningProxy) -> tuple[int, int]:
        """(max_connections, superuser_reserved_connections) of the target's writer."""
        if p.target is not None and p.target[0] == "instance":
            inst = self.rec.find(p.region, p.target[1])
            if inst is not None:
                with contextlib.suppress(Exception):
                    rows = inst.primary.cluster.sql("SELECT current_setting('max_connections')::int, "
                                                    "current_setting('superuser_reserved_connections')::int")
                    return int(rows[0][0]), int(rows[0][1])
        with contextlib.suppress(Exception), self.probe(p) as conn:
            row = conn.execute("SELECT current_setting('max_connections')::int, "
                               "current_setting('superuser_reserved_connections')::int").fetchone()
            return int(row[0]), int(row[1])
        return 100, 3

    def probe(self, p: RunningProxy, timeout: int = 2) -> Any:
        """A login to the target's writer through the proxy's own link, with the proxy's secret (a health check)."""
        import psycopg

        auth = p.auth[0]
        return psycopg.connect(host=p.link_address, port=p.port, user=auth.username, password=auth.password,
                               dbname="postgres", connect_timeout=timeout, autocommit=True)

    def retarget(self, p: RunningProxy) -> None:
        """Point the proxy at its target's current writer and size the pool from it."""
        with p.lock:
            writer = self.writer_of(p)
            if writer != p.writer:
                self.runtime.point(p, writer)
            if writer is not None:
                limits = self.target_limits(p)
                if limits != p.max_connections:
                    p.max_connections = limits
                    self.runtime.configure(p)

    def cluster_writer_changed(self, region: str, cluster_id: str) -> None:
        """For the Aurora emulation: call after a cluster's writer moved; proxies tracking it follow."""
        with self.lock:
            proxies = [p for p in self.proxies.values() if p.region == region and p.target == ("cluster", cluster_id)]
        for p in proxies:
            self._follow(p)

    def _follow(self, p: RunningProxy) -> None:
        try:
            self.retarget(p)
        except Exception:
            logger.exception("RDS Proxy %s could not follow its target's new writer", p.name)

    # -- hooks ------------------------------------------------------------------------------------------------
    def primary_changed(self, inst: Instance) -> None:
        with self.lock:
            proxies = [p for p in self.proxies.values()
                       if p.region == inst.region and p.target == ("instance", inst.identifier)]
        for p in proxies:
            self._follow(p)

    def register(self, p: RunningProxy) -> None:
        with self.lock:
            self.proxies[(p.region, p.name)] = p

    def drop(self, p: RunningProxy) -> None:
        with self.lock:
            if self.proxies.get((p.region, p.name)) is p:
                del self.proxies[(p.region, p.name)]
        self.runtime.stop(p)
        self.api.unrealm(p)

    def republish(self) -> None:
        """Serve every proxy's endpoint name again (a DNS cleanup of another test may have removed it)."""
        with self.lock:
            proxies = list(self.proxies.values())
        for p in proxies:
            self.runtime.publish(p)

    def reset(self) -> None:
        with self.lock:
            proxies = list(self.proxies.values())
        for p in proxies:
            try:
                self.drop(p)
            except Exception:
                logger.exception("removing RDS Proxy %s failed", p.name)

    def stop(self) -> None:
        self.reset()
        if self._runtime is not None:
            self._runtime.proxies.close()


def extension(rec: RdsReconciler) -> RdsProxyExtension:
    return RdsProxyExtension(rec)


def proxy_extension(rec: RdsReconciler) -> RdsProxyExtension:
    """The reconciler's RDS Proxy extension."""
    for ext in rec.extensions:
        if isinstance(ext, RdsProxyExtension):
            return ext
    from harness.errors import HarnessError

    raise HarnessError("the RDS Proxy extension (harness.rds.rdsproxy) is not loaded in this reconciler", obj=rec)


def set_max_connections(rec: RdsReconciler, identifier: str, value: int, region: str | None = None) -> None:
    """A DB instance's max_connections (what a DB parameter group + reboot does on RDS): set on every host,
    servers restarted (standbys first when raising, so a standby never has fewer than its primary)."""
    from harness.errors import HarnessError

    if value < 5:
        raise HarnessError(f"max_connections must be >= 5 (superusers keep 3), got {value}")
    inst = rec.instance(identifier, region)

    def work() -> None:
        from harness.rds.replication import wait_caught_up

        primary, standby = inst.primary, inst.standby
        lowering = value < int(primary.cluster.value("SHOW max_connections"))
        for host in [h for h in ((primary, standby) if lowering else (standby, primary)) if h is not None]:
            host.cluster.alter_system(max_connections=str(value))
            rec.fleet.restart(host)
            if lowering and host is primary and standby is not None:
                # A standby refuses to start with fewer connections than its primary's last WAL record says.
                wait_caught_up(primary.cluster, standby.cluster)

    rec.submit(inst, work, what="max_connections change").result(120)
    ext = proxy_extension(rec)
    with ext.lock:
        proxies = [p for p in ext.proxies.values() if p.target == ("instance", inst.identifier)]
    for p in proxies:
        ext.retarget(p)


__all__ = ["PoolConfig", "RdsProxyExtension", "extension", "proxy_extension", "set_max_connections"]
