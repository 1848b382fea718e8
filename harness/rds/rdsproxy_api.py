"""The RDS API side of the emulated RDS Proxy: checks what moto would accept but dbdrill cannot run, lets moto record
the proxy, then starts or changes the real one and edits moto's records (endpoint name, status, target health).
ModifyDBProxy, which moto lacks, is answered here."""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from harness.aws.server import HttpResponse
from harness.rds.api import ApiError
from harness.rds.rdsproxy_runtime import PoolConfig, RunningProxy

if TYPE_CHECKING:
    from harness.aws.middleware import Call
    from harness.rds.rdsproxy import RdsProxyExtension

logger = logging.getLogger(__name__)

_MEMBER = re.compile(r"^(?P<list>[A-Za-z]+)\.member\.(?P<n>\d+)(?:\.(?P<key>[A-Za-z]+))?$")


def members(p: dict[str, str], name: str) -> list[Any]:
    """Query-protocol list ``name`` (``Name.member.N`` or ``Name.member.N.Key``) as values or dicts, in order."""
    found: dict[int, Any] = {}
    for key, value in p.items():
        m = _MEMBER.match(key)
        if m is None or m["list"] != name:
            continue
        n = int(m["n"])
        if m["key"]:
            found.setdefault(n, {})[m["key"]] = value
        else:
            found[n] = value
    return [found[n] for n in sorted(found)]


def _int(p: dict[str, str], key: str, low: int, high: int) -> int | None:
    if key not in p:
        return None
    try:
        value = int(p[key])
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        name = key.rsplit(".", 1)[-1]
        raise ApiError("InvalidParameterValue", f"{name} must be an integer from {low} to {high}, got {p[key]!r}.")
    return value


def moto_answer(operation: str, result: dict[str, Any]) -> HttpResponse:
    """The query-protocol answer of ``operation`` with ``result``, serialised by moto as for its own actions."""
    from moto.core.serialize import XFormedAttributePicker, get_serializer_class
    from moto.core.utils import get_service_model

    model = get_service_model("rds")
    serializer = get_serializer_class("rds", "query")(operation_model=model.operation_model(operation),
                                                      pretty_print=False, value_picker=XFormedAttributePicker())
    out = serializer.serialize(result)
    body = out["body"]
    return HttpResponse(int(out["status_code"]), [("Content-Type", "text/xml")],
                        body.encode() if isinstance(body, str) else body)


class ProxyApi:
    """RDS Proxy operations; each handler takes (call, flat query parameters, region)."""

    def __init__(self, ext: RdsProxyExtension) -> None:
        self.ext = ext
        self.rec = ext.rec
        self._realms: dict[int, Any] = {}

    def handlers(self) -> dict[str, Any]:
        return {"CreateDBProxy": self.create, "DeleteDBProxy": self.delete, "ModifyDBProxy": self.modify,
                "RegisterDBProxyTargets": self.register, "DeregisterDBProxyTargets": self.deregister,
                "DescribeDBProxyTargets": self.describe_targets, "DescribeDBProxyTargetGroups": self.known,
                "ModifyDBProxyTargetGroup": self.modify_target_group}

    # -- helpers -------------------------------------------------------------------------------------------
    def _moto(self, region: str, name: str) -> Any:
        with self.rec.aws.lock:
            return self.rec.aws.backend("rds", region).db_proxies.get(name)

    def _ours(self, p: dict[str, str], region: str) -> RunningProxy:
        name = p.get("DBProxyName", "")
        proxy = self.ext.find(region, name)
        if proxy is None or self._moto(region, name) is None:
            raise ApiError("DBProxyNotFoundFault", f"The specified proxy name {name} doesn't correspond to a proxy "
                           "owned by your Amazon Web Services account in the specified Amazon Web Services Region.",
                           404)
        return proxy

    def known(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        self._ours(p, region)
        return call.forward()

    def _wait(self, future: Any) -> None:
        if self.rec.timings.api_waits:
            try:
                future.result(120)
            except Exception:
                logger.debug("RDS Proxy background work failed (see the error above)")

    def _set_status(self, region: str, name: str, status: str) -> None:
        with self.rec.aws.lock:
            record = self.rec.aws.backend("rds", region).db_proxies.get(name)
            if record is not None:
                record.status = status

    def _realm(self, proxy: RunningProxy) -> Any:
        """Registers the proxy's PgBouncer directory with the IAM authority (PAM logins arrive from there)."""
        from harness.rds.iamauth import Realm, _same, authority

        auth = authority(self.rec)
        users = {a.username for a in proxy.auth if a.iam}

        def resolve(cwd: Any) -> Realm | None:
            if not _same(proxy.bouncer.root, cwd):
                return None
            from harness.rds.pgbouncer import ADMIN_USER

            return Realm(f"proxy:{proxy.region}/{proxy.name}", proxy.endpoint, proxy.port, proxy.region,
                         users=lambda user: user in users, passwords={ADMIN_USER: proxy.bouncer.admin_password})

        self.unrealm(proxy)
        auth.resolvers.append(resolve)
        self._realms[id(proxy)] = resolve
        return auth.start()

    def unrealm(self, proxy: RunningProxy) -> None:
        resolve = self._realms.pop(id(proxy), None)
        if resolve is not None:
            from harness.rds.iamauth import authority

            auth = authority(self.rec)
            if resolve in auth.resolvers:
                auth.resolvers.remove(resolve)

    # -- create / delete -----------------------------------------------------------------------------------
    def create(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        from harness.rds.rdsproxy import SUPPORTED_FAMILIES

        family = p.get("EngineFamily", "")
        if family not in SUPPORTED_FAMILIES:
            raise ApiError("InvalidParameterValue", f"EngineFamily {family!r} is not supported by dbdrill's RDS Proxy:"
                           f" it runs PgBouncer in front of real PostgreSQL, so use EngineFamily "
                           f"{' or '.join(SUPPORTED_FAMILIES)} (MYSQL and SQLSERVER proxies are not emulated).")
        name = p.get("DBProxyName", "")
        if self._moto(region, name) is not None:
            return call.forward()  # moto answers DBProxyAlreadyExistsFault
        auth = self.ext.auth_entries(members(p, "Auth"), region)
        idle = _int(p, "IdleClientTimeout", 1, 28800) or 1800
        if (p.get("RequireTLS") or "").lower() == "true":
            logger.warning("RDS Proxy %s: RequireTLS is recorded but not enforced (the emulated proxy speaks plain "
                           "TCP on loopback)", name)
        response = call.forward()
        if response.status != 200:
            return response
        record = self._moto(region, name)
        endpoint = f"{name}.proxy-{record.url_identifier}.{region}.rds.amazonaws.com"
        with self.rec.aws.lock:
            record.endpoint = endpoint
            record.status = "creating"
            response = moto_answer("CreateDBProxy", {"DBProxy": record})  # as AWS answers: creating, the real name
        proxy = self.ext.runtime.build(name, region, endpoint, auth, idle, PoolConfig())

        def work() -> None:
            realm = self._realm(proxy) if proxy.iam else None
            self.ext.runtime.start(proxy, realm)
            self.ext.register(proxy)
            self._set_status(region, name, "available")
            logger.info("RDS Proxy %s available at %s (%s:%d)", name, endpoint, proxy.address, proxy.port)

        def failed() -> None:
            self.unrealm(proxy)
            self._set_status(region, name, "incompatible-network")

        self._wait(self.rec.spawn(work, what=f"RDS Proxy {name} creation", on_error=failed))
        return response

    def delete(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        proxy = self._ours(p, region)
        self._set_status(region, proxy.name, "deleting")
        response = call.forward()
        if response.status == 200:
            self._wait(self.rec.spawn(lambda: self.ext.drop(proxy), what=f"RDS Proxy {proxy.name} deletion",
                                      on_error=lambda: None))
        return response

    def modify(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        """ModifyDBProxy (moto lacks it): IdleClientTimeout, Auth, RequireTLS, DebugLogging, RoleArn."""
        proxy = self._ours(p, region)
        if p.get("NewDBProxyName"):
            raise ApiError("InvalidParameterCombination", "dbdrill does not rename DB proxies (NewDBProxyName): "
                           "create a new proxy instead.")
        idle = _int(p, "IdleClientTimeout", 1, 28800)
        entries = members(p, "Auth")
        auth = self.ext.auth_entries(entries, region) if entries else None
        record = self._moto(region, proxy.name)
        with self.rec.aws.lock:
            if idle is not None:
                record.idle_client_timeout = idle
            if entries:
                record.auth = [{**e, "IAMAuth": e.get("IAMAuth", "DISABLED")} for e in entries]
            for key, attr in (("RequireTLS", "require_tls"), ("DebugLogging", "debug_logging")):
                if key in p:
                    setattr(record, attr, p[key].lower() == "true")
            if p.get("RoleArn"):
                record.role_arn = p["RoleArn"]
            groups = members(p, "SecurityGroups")
            if groups:
                record.vpc_security_group_ids = groups

        def work() -> None:
            with proxy.lock:
                if idle is not None:
                    proxy.idle_client_timeout = idle
                if auth is not None:
                    proxy.auth = auth
                    if proxy.iam:
                        self.ext.runtime._prepare_iam(proxy, self._realm(proxy))
                self.ext.runtime.configure(proxy)

        self._wait(self.rec.spawn(work, what=f"RDS Proxy {proxy.name} modification", on_error=lambda: None))
        return moto_answer("ModifyDBProxy", {"DBProxy": record})

    # -- targets -------------------------------------------------------------------------------------------
    def register(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        proxy = self._ours(p, region)
        instances = [i.lower() for i in members(p, "DBInstanceIdentifiers")]
        clusters = [c.lower() for c in members(p, "DBClusterIdentifiers")]
        for ident in instances:
            if self.rec.moto_db(region, ident) is None:
                raise ApiError("DBInstanceNotFound", f"DBInstance {ident} not found.", 404)
        with self.rec.aws.lock:
            clusters_known = set(self.rec.aws.backend("rds", region).clusters)
        for ident in clusters:
            if ident not in clusters_known:
                raise ApiError("DBClusterNotFoundFault", f"DBCluster {ident} not found.", 404)
        if len(instances) + len(clusters) != 1 or proxy.target is not None:
            raise ApiError("InvalidParameterValue", "A DB proxy has one target: register exactly one DB instance or "
                           "one DB cluster (deregister the current target first).")
        if instances:
            ident = instances[0]
            if self.rec.find(region, ident) is None:
                raise ApiError("InvalidDBInstanceState", f"DB instance {ident} is not a PostgreSQL instance dbdrill "
                               "runs (Aurora cluster members are registered through their cluster).")
            target = ("instance", ident)
        else:
            ident = clusters[0]
            target = ("cluster", ident)
        response = call.forward()
        if response.status != 200:
            return response

        def work() -> None:
            with proxy.lock:
                proxy.target = target
                self.ext.retarget(proxy)
            if proxy.writer is None:
                logger.warning("RDS Proxy %s: no running writer for %s %s yet", proxy.name, *target)

        self._wait(self.rec.spawn(work, what=f"RDS Proxy {proxy.name} target registration", on_error=lambda: None))
        try:
            self._decorate(proxy)
        except Exception:  # the registration happened: answering 5xx would make the client retry it
            logger.exception("RDS Proxy %s: describing the new target failed", proxy.name)
        return response

    def deregister(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        proxy = self._ours(p, region)
        named = {i.lower() for i in [*members(p, "DBInstanceIdentifiers"), *members(p, "DBClusterIdentifiers")]}
        response = call.forward()
        if response.status == 200 and proxy.target is not None and proxy.target[1] in named:
            with proxy.lock:
                proxy.target = None
                self.ext.runtime.point(proxy, None)
        return response

    def describe_targets(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        proxy = self._ours(p, region)
        self._decorate(proxy)
        return call.forward()

    def _decorate(self, proxy: RunningProxy) -> None:
        """moto's target records: endpoint, port, role and the real health."""
        from harness.rds.rdsproxy_runtime import target_health, tracked

        health = target_health(self.ext, proxy)
        record = self._moto(proxy.region, proxy.name)
        if record is None:
            return
        with self.rec.aws.lock:
            for target in record.proxy_target_groups["default"].targets:
                tracked(target)
                inst = self.rec.find(proxy.region, target.rds_resource_id)
                if inst is not None:
                    target.endpoint, target.port = inst.dns_name, inst.port
                    target.target_arn = inst.arn
                target.role = "READ_WRITE"
                target.dbdrill_health = health

    def modify_target_group(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        proxy = self._ours(p, region)
        prefix = "ConnectionPoolConfig."
        max_pct = _int(p, prefix + "MaxConnectionsPercent", 1, 100)
        idle_pct = _int(p, prefix + "MaxIdleConnectionsPercent", 0, 100)
        borrow = _int(p, prefix + "ConnectionBorrowTimeout", 0, 3600)
        pool = proxy.pool
        new_max = pool.max_connections_percent if max_pct is None else max_pct
        new_idle = new_max // 2 if idle_pct is None else idle_pct
        if new_idle > new_max:
            raise ApiError("InvalidParameterValue", f"MaxIdleConnectionsPercent ({new_idle}) must not exceed "
                           f"MaxConnectionsPercent ({new_max}).")
        new_pool = PoolConfig(new_max, new_idle, pool.borrow_timeout if borrow is None else borrow)
        response = call.forward()
        if response.status != 200:
            return response
        record = self._moto(region, proxy.name)
        with self.rec.aws.lock:
            group = record.proxy_target_groups["default"]
            group.max_connections, group.max_idle_connections = new_pool.max_connections_percent, new_idle
            group.borrow_timeout = new_pool.borrow_timeout

        def work() -> None:
            with proxy.lock:
                proxy.pool = new_pool
                self.ext.runtime.configure(proxy)

        self._wait(self.rec.spawn(work, what=f"RDS Proxy {proxy.name} pool change", on_error=lambda: None))
        return moto_answer("ModifyDBProxyTargetGroup", {"DBProxyTargetGroup": group})
