"""The RDS API side of the reconciler: an interceptor in front of moto (the AWS endpoint's pipeline) that checks
what moto would accept but dbdrill cannot run, lets moto record the control-plane state, then does the real
work (outside moto's lock) and edits moto's record so DescribeDBInstances tells the truth.

Why an interceptor rather than patching moto's backend: it sees each request's parameters (moto's backend
never gets ``ForceFailover``), runs outside the lock every other AWS request needs, and answers AWS-shaped
errors itself; moto's objects are still the single source of what the API reports."""
from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from harness.aws.server import HttpResponse
from harness.aws.wire import error_response, service_spec
from harness.errors import HarnessError
from harness.rds.fleet import PORT, Instance

if TYPE_CHECKING:
    from harness.aws.middleware import Call
    from harness.aws.wire import RequestInfo
    from harness.rds.reconciler import RdsReconciler

logger = logging.getLogger(__name__)

SUPPORTED_ENGINES = ("postgres",)
RESERVED_USERS = {"rdsadmin", "rdsrepladmin", "rds_superuser", "pgbouncer_admin", "public"}
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_BAD_PASSWORD_CHARS = set('/@" ')


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _flag(params: dict[str, str], key: str) -> bool | None:
    value = params.get(key)
    return None if value is None else value.lower() == "true"


def next_az(region: str, az: str) -> str:
    """The AZ a Multi-AZ standby goes to: the next letter (a -> b ... f -> a)."""
    letter = az[len(region):] or "a"
    letters = "abcdef"
    return region + letters[(letters.index(letter) + 1) % len(letters)] if letter in letters else f"{region}b"


def check_password(password: str | None, param: str = "MasterUserPassword") -> str:
    if not password:
        raise ApiError("InvalidParameterValue", f"The parameter {param} must be provided and must not be blank "
                       "(dbdrill needs the password to create the real database user).")
    if len(password) < 8:
        raise ApiError("InvalidParameterValue", f"The parameter {param} is not a valid password because it is "
                       "shorter than 8 characters.")
    if any(c in _BAD_PASSWORD_CHARS or c not in string.printable for c in password):
        raise ApiError("InvalidParameterValue", f"The parameter {param} is not a valid password. Only printable "
                       "ASCII characters besides '/', '@', '\"', ' ' may be used.")
    return password


def master_login(p: dict[str, str], db_param: str) -> tuple[str, str, str]:
    """(user, password, database) of a create call, checked as RDS checks them; ``db_param`` is the database
    name's parameter (DBName for instances, DatabaseName for clusters)."""
    if _flag(p, "ManageMasterUserPassword"):
        raise ApiError("InvalidParameterCombination", "dbdrill needs MasterUserPassword to create the real "
                       "master user: ManageMasterUserPassword (Secrets Manager) is not supported.")
    user = p.get("MasterUsername") or ""
    if not _IDENT.match(user) or user.lower() in RESERVED_USERS or user.lower().startswith("pg_"):
        raise ApiError("InvalidParameterValue", f"MasterUsername {user!r} is not valid: 1-63 letters, digits or "
                       "underscores, starting with a letter, not a reserved name (rdsadmin, pg_...).")
    password = check_password(p.get("MasterUserPassword"))
    db_name = p.get(db_param) or "postgres"
    if not _IDENT.match(db_name):
        raise ApiError("InvalidParameterValue", f"{db_param} {db_name!r} is not valid: 1-63 letters, digits or "
                       "underscores, starting with a letter.")
    return user, password, db_name


def _with_status(response: HttpResponse, status: str) -> HttpResponse:
    """The mutating call answers the transitional status (creating, rebooting...), as AWS does."""
    response.body = re.sub(rb"<DBInstanceStatus>[^<]*</DBInstanceStatus>",
                           b"<DBInstanceStatus>" + status.encode() + b"</DBInstanceStatus>", response.body, count=1)
    return response


class RdsInterceptor:
    """Handles the RDS operations that change real things; every other RDS call goes straight to moto."""

    def __init__(self, rec: RdsReconciler) -> None:
        self.rec = rec
        self.spec = service_spec("rds")
        self.handlers: dict[str, Callable[[Call, dict[str, str], str], HttpResponse]] = {
            "CreateDBInstance": self.create, "CreateDBInstanceReadReplica": self.create_replica,
            "PromoteReadReplica": self.promote, "RebootDBInstance": self.reboot, "DeleteDBInstance": self.delete,
            "ModifyDBInstance": self.modify, "StopDBInstance": self.stop, "StartDBInstance": self.start,
            "CreateEventSubscription": self.create_subscription, "ModifyEventSubscription": self.change_subscription,
            "AddSourceIdentifierToSubscription": self.change_subscription,
            "RemoveSourceIdentifierFromSubscription": self.change_subscription,
        }
        for ext in rec.extensions:
            self.handlers.update(ext.handlers(dict(self.handlers)))

    def applies(self, info: RequestInfo) -> bool:
        return info.signing_name == "rds" and info.operation in self.handlers

    def __call__(self, call: Call) -> HttpResponse:
        params = {k: v[0] for k, v in call.info.params.items() if v}
        region = call.info.region or self.rec.aws.default_region
        try:
            return self.handlers[str(call.info.operation)](call, params, region)
        except ApiError as exc:
            return error_response("query", exc.code, exc.message, exc.status, spec=self.spec)
        except HarnessError as exc:
            # Not retryable (a 5xx would be): the state the instance is in does not allow it now.
            return error_response("query", "InvalidDBInstanceState", f"dbdrill: {exc}", 400, spec=self.spec)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _finish(self, future: Future[Any]) -> None:
        """Fast profile: the call returns when the work is done. Failures are already logged and shown as
        status "failed"; the AWS call itself succeeded."""
        if self.rec.timings.api_waits:
            from harness.rds.reconciler import API_WAIT_TIMEOUT

            try:
                future.result(API_WAIT_TIMEOUT)
            except Exception:
                logger.debug("RDS background work failed (see the error above)")

    def _ours(self, params: dict[str, str], region: str) -> Instance | None:
        return self.rec.find(region, params.get("DBInstanceIdentifier", ""))

    def _available(self, inst: Instance) -> None:
        if inst.status != "available":
            raise ApiError("InvalidDBInstanceState", f"Instance {inst.identifier} is not currently in the "
                           f"available state (it is {inst.status}).")

    def _spawn(self, region: str, ident: str, work: Callable[[], Any], what: str) -> Future[Any]:
        """Work for an instance that is not registered yet (creation): on failure moto's record says "failed"."""

        def failed() -> None:
            with self.rec.aws.lock:
                db = self.rec.aws.backend("rds", region).databases.get(ident)
                if db is not None:
                    db.status = "failed"

        return self.rec.spawn(work, what=f"{what} of {region}/{ident}", on_error=failed)

    # -- create ------------------------------------------------------------------------------------------------
    def create(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        if p.get("DBClusterIdentifier"):
            return call.forward()  # an Aurora cluster member: not a standalone DB instance
        engine = p.get("Engine", "").lower()
        if engine not in SUPPORTED_ENGINES:
            raise ApiError("InvalidParameterValue", f"Invalid DB engine: {p.get('Engine')!r}. dbdrill runs real "
                           f"databases for RDS DB instances with Engine {', '.join(SUPPORTED_ENGINES)} (PostgreSQL "
                           f"{self.rec.engine.bins.version if self.rec.engine else ''}); use Engine='postgres'.")
        user, password, db_name = master_login(p, "DBName")
        multi_az = bool(_flag(p, "MultiAZ"))
        az = p.get("AvailabilityZone")
        if az and multi_az:
            raise ApiError("InvalidParameterCombination",
                           "Requesting a specific availability zone is not valid for Multi-AZ instances.")
        if az and not (az.startswith(region) and len(az) == len(region) + 1):
            raise ApiError("InvalidParameterValue", f"AvailabilityZone {az!r} is not in region {region} "
                           f"(e.g. {region}a).")
        port = int(p.get("Port") or PORT)
        response = call.forward()
        if response.status != 200:
            return response
        ident = p["DBInstanceIdentifier"].lower()
        primary_az = az or f"{region}a"
        secondary = next_az(region, primary_az) if multi_az else None
        self._prepare_record(region, ident, status="creating", availability_zone=primary_az,
                             secondary_availability_zone=secondary, engine_version=p.get("EngineVersion"))

        def work() -> Instance:
            fleet = self.rec.fleet
            host = fleet.new_primary(region, primary_az, ident, port=port, user=user, password=password,
                                     db_name=db_name)
            inst = self._instance(region, ident, host, port=port, user=user, password=password, db_name=db_name)
            if secondary is not None:
                try:
                    inst.standby = fleet.new_standby(host, region, secondary, ident, role="standby", sync=True,
                                                     port=port)
                except BaseException:
                    fleet.remove_host(host)
                    raise
            self._open(inst)
            self.rec.emit(inst, "created")
            return inst

        self._finish(self._spawn(region, ident, work, "creation"))
        return _with_status(response, "creating")

    def _prepare_record(self, region: str, ident: str, *, status: str, engine_version: str | None = None,
                        **attrs: Any) -> None:
        from moto.rds.models import Event

        aws = self.rec.aws
        with aws.lock:
            backend = aws.backend("rds", region)
            db = backend.databases.get(ident)
            if db is None:
                return
            db.status = status
            if not engine_version and self.rec.engine is not None:
                db.engine_version = self.rec.engine.bins.version
            for key, value in attrs.items():
                setattr(db, key, value)
            # moto's own "created" event is replaced by the real one when the instance is up.
            backend.events[:] = [e for e in backend.events
                                 if not (isinstance(e, Event) and e.source_identifier == ident)]

    def _instance(self, region: str, ident: str, host: Any, **kw: Any) -> Instance:
        db = self.rec.moto_db(region, ident)
        arn = db.db_instance_arn if db is not None else \
            f"arn:aws:rds:{region}:{self.rec.aws.account_id}:db:{ident}"
        dns_name = db.address if db is not None else f"{ident}.aaaaaaaaaa.{region}.rds.amazonaws.com"
        return Instance(region=region, identifier=ident, arn=arn, dns_name=dns_name, primary=host, **kw)

    def _open(self, inst: Instance) -> None:
        """A new instance is registered, named in DNS, and available."""
        self.rec.register(inst)
        self.rec.fleet.publish(inst)
        self.rec.sync_azs(inst)
        self.rec.set_moto(inst, status="available")

    # -- read replicas ----------------------------------------------------------------------------------------
    def create_replica(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        source = self.rec.find_arn(p.get("SourceDBInstanceIdentifier", ""), region)
        if source is None:
            return call.forward()  # moto answers DBInstanceNotFound
        self._available(source)
        az = p.get("AvailabilityZone") or (source.primary.az if source.region == region else f"{region}a")
        port = int(p.get("Port") or source.port)
        response = call.forward()
        if response.status != 200:
            return response
        ident = p["DBInstanceIdentifier"].lower()
        self._prepare_record(region, ident, status="creating", availability_zone=az,
                             secondary_availability_zone=None, multi_az=False, port=port)

        def work() -> Instance:
            with source.lock:
                host = self.rec.fleet.new_standby(source.primary, region, az, ident, role="replica", port=port)
            inst = self._instance(region, ident, host, port=port, user=source.user, password=source.password,
                                  db_name=source.db_name, source=source)
            source.replicas.append(inst)
            self._open(inst)
            self.rec.emit(inst, "created")
            self.rec.emit(inst, "replication_started")
            return inst

        self._finish(self._spawn(region, ident, work, "read replica creation"))
        return _with_status(response, "creating")

    def promote(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        ident = p.get("DBInstanceIdentifier", "").lower()
        if self.rec.moto_db(region, ident) is None:
            raise ApiError("DBInstanceNotFound", f"DBInstance {ident} not found.", 404)
        inst = self.rec.find(region, ident)
        if inst is None or inst.source is None:
            raise ApiError("InvalidDBInstanceState", f"DB instance {ident} is not a read replica.")
        self._available(inst)
        response = call.forward()
        if response.status != 200:
            return response
        self.detach_record(inst)
        self.rec.set_moto(inst, status="modifying")
        self._finish(self.rec.submit(inst, lambda: self.do_promote(inst), what="promotion"))
        return _with_status(response, "modifying")

    def detach_record(self, inst: Instance) -> None:
        """moto's records: the replica is standalone, its source no longer lists it."""
        source = inst.source
        with self.rec.aws.lock:
            db = self.rec.aws.backend("rds", inst.region).databases.get(inst.identifier)
            if db is not None:
                db.is_replica = False
                db.source_db_instance_identifier = None
            if source is not None:
                src = self.rec.aws.backend("rds", source.region).databases.get(source.identifier)
                if src is not None:
                    src.replicas = [r for r in src.replicas if r not in (inst.identifier, inst.arn)]

    def do_promote(self, inst: Instance) -> None:
        took = self.rec.fleet.promote_replica(inst)
        self.rec.set_moto(inst, status="available")
        self.rec.emit(inst, "replication_stopped")
        self.rec.emit(inst, "restarted")
        logger.info("read replica %s promoted in %.3fs", inst.identifier, took)

    # -- reboot, failover ----------------------------------------------------------------------------------------
    def reboot(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        inst = self._ours(p, region)
        if inst is None:
            return call.forward()
        force = bool(_flag(p, "ForceFailover"))
        self._available(inst)
        if force and inst.standby is None:
            if inst.multi_az:
                raise ApiError("InvalidDBInstanceState", f"Instance {inst.identifier}'s Multi-AZ standby is still "
                               "being rebuilt after the last failover: try again when it is ready.")
            raise ApiError("InvalidParameterCombination", f"Cannot force a failover: DB instance {inst.identifier} "
                           "is not Multi-AZ (create it with MultiAZ=True).")
        response = call.forward()
        if response.status != 200:
            return response
        self.rec.set_moto(inst, status="rebooting")

        def work() -> None:
            if force:
                self.rec.do_failover(inst, crash=False)
            else:
                if self.rec.timings.reboot_delay:
                    self.rec.pause(self.rec.timings.reboot_delay)
                self.rec.fleet.restart(inst.primary)
                self.rec.set_moto(inst, status="available")
            self.rec.emit(inst, "restarted")

        self._finish(self.rec.submit(inst, work, what="reboot"))
        return _with_status(response, "rebooting")

    # -- delete --------------------------------------------------------------------------------------------------
    def delete(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        inst = self._ours(p, region)
        if inst is None:
            return call.forward()
        if inst.source is not None and inst.source.region != inst.region:
            # moto cannot unlink a cross-region replica from its source (it lists it by ARN): do it first.
            self.detach_record(inst)
        response = call.forward()
        if response.status != 200:
            return response
        self.rec.forget(inst)
        inst.status = "deleting"

        def work() -> None:
            for replica in list(inst.replicas):
                # As on RDS: the read replicas of a deleted source become standalone instances.
                with replica.lock:
                    self.detach_record(replica)
                    self.do_promote(replica)
            self.rec.fleet.delete(inst)
            self.rec.emit(inst, "deleted")

        self._finish(self.rec.submit(inst, work, what="deletion"))
        return _with_status(response, "deleting")

    # -- modify, stop, start ---------------------------------------------------------------------------------
    def modify(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        inst = self._ours(p, region)
        if inst is None:
            return call.forward()
        if p.get("NewDBInstanceIdentifier"):
            raise ApiError("InvalidParameterCombination", "dbdrill does not rename running DB instances "
                           "(NewDBInstanceIdentifier): create a new instance instead.")
        multi = _flag(p, "MultiAZ")
        password = p.get("MasterUserPassword")
        if multi is None and password is None:
            return call.forward()
        if password is not None:
            check_password(password)
        if multi and inst.source is not None:
            raise ApiError("InvalidParameterCombination", "dbdrill does not run Multi-AZ read replicas: promote "
                           "the replica first.")
        self._available(inst)
        response = call.forward()
        if response.status != 200:
            return response
        self.rec.set_moto(inst, status="modifying")

        def work() -> None:
            if password is not None:
                from psycopg import sql

                inst.primary.cluster.sql(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(inst.user), sql.Literal(password)))
                inst.password = password
                self.rec.emit(inst, "password_reset")
            if multi and not inst.multi_az:
                self.rec.emit(inst, "converting_multi_az")
                inst.standby = self.rec.fleet.new_standby(inst.primary, inst.region,
                                                          next_az(inst.region, inst.primary.az), inst.identifier,
                                                          role="standby", sync=True, port=inst.port)
                self.rec.emit(inst, "converted_multi_az")
            elif multi is False and inst.multi_az:
                self.rec.emit(inst, "converting_single_az")
                self.rec.fleet.drop_standby(inst)
                self.rec.emit(inst, "converted_single_az")
            self.rec.sync_azs(inst)
            self.rec.set_moto(inst, status="available")

        self._finish(self.rec.submit(inst, work, what="modification"))
        return _with_status(response, "modifying")

    def stop(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        inst = self._ours(p, region)
        if inst is None:
            return call.forward()
        self._available(inst)
        response = call.forward()
        if response.status != 200:
            return response
        self.rec.set_moto(inst, status="stopping")

        def work() -> None:
            for host in inst.hosts:
                host.expected_down = True
                host.cluster.stop("fast")
            self.rec.set_moto(inst, status="stopped")
            self.rec.emit(inst, "stopped")

        self._finish(self.rec.submit(inst, work, what="stop"))
        return _with_status(response, "stopping")

    def start(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        inst = self._ours(p, region)
        if inst is None:
            return call.forward()
        if inst.status != "stopped":
            raise ApiError("InvalidDBInstanceState", f"Instance {inst.identifier} is not stopped, it cannot be "
                           "started.")
        response = call.forward()
        if response.status != 200:
            return response
        self.rec.set_moto(inst, status="starting")

        def work() -> None:
            for host in (inst.primary, inst.standby):
                if host is not None:
                    host.cluster.start()
                    host.expected_down = False
            self.rec.set_moto(inst, status="available")
            self.rec.emit(inst, "started")

        self._finish(self.rec.submit(inst, work, what="start"))
        return _with_status(response, "starting")

    # -- event subscriptions -------------------------------------------------------------------------------------
    def create_subscription(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        response = call.forward()
        if response.status == 200 and "Enabled" not in p:
            # RDS enables a subscription unless told otherwise; moto defaults to disabled.
            with self.rec.aws.lock:
                sub = self.rec.aws.backend("rds", region).event_subscriptions.get(p.get("SubscriptionName"))
                if sub is not None:
                    sub.enabled = True
        return response

    def change_subscription(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        """ModifyEventSubscription and Add/RemoveSourceIdentifier...: moto lacks them; answered here."""
        from harness.rds.events import subscription_response

        action = str(call.info.operation)
        name = p.get("SubscriptionName", "")
        with self.rec.aws.lock:
            sub = self.rec.aws.backend("rds", region).event_subscriptions.get(name)
            if sub is None:
                raise ApiError("SubscriptionNotFound", f"Subscription {name} not found.", 404)
            if action == "ModifyEventSubscription":
                categories = [v for k, v in sorted(p.items()) if k.startswith("EventCategories.")]
                if p.get("SnsTopicArn"):
                    sub.sns_topic_arn = p["SnsTopicArn"]
                if p.get("SourceType"):
                    sub.source_type = p["SourceType"]
                if categories:
                    sub.event_categories = categories
                if "Enabled" in p:
                    sub.enabled = bool(_flag(p, "Enabled"))
            else:
                source = p.get("SourceIdentifier", "")
                ids = [i for i in sub.source_ids or [] if i != source]
                sub.source_ids = [*ids, source] if action.startswith("Add") else ids
            body = subscription_response(action, sub, self.rec.aws.account_id)
        return HttpResponse(200, [("Content-Type", "text/xml")], body)
