"""The RDS API for Aurora PostgreSQL: CreateDBCluster (aurora-postgresql only), cluster members through
CreateDBInstance / DeleteDBInstance / RebootDBInstance, FailoverDBCluster, DeleteDBCluster, ModifyDBCluster (master
password) and the custom endpoint operations moto lacks (Create/Describe/Modify/DeleteDBClusterEndpoint)."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.rds.api import ApiError, _flag, check_password, master_login
from harness.rds.aurora import APPLIED_PARAMETERS, ENGINE, AuroraCluster, CustomEndpoint, Member
from harness.rds.aurora_global import GlobalApi
from harness.rds.fleet import PORT
from harness.rds.query import params, respond

if TYPE_CHECKING:
    from harness.aws.middleware import Call
    from harness.aws.server import HttpResponse
    from harness.rds.aurora import AuroraClusters

logger = logging.getLogger(__name__)

Handler = Callable[["Call", dict[str, str], str], "HttpResponse"]
CUSTOM_TYPES = ("READER", "ANY")


def _with_tag(response: HttpResponse, tag: str, value: str) -> HttpResponse:
    """The mutating call answers the transitional status (creating, failing-over...), as AWS does."""
    response.body = re.sub(rf"<{tag}>[^<]*</{tag}>".encode(), f"<{tag}>{value}</{tag}>".encode(), response.body,
                           count=1)
    return response


class AuroraApi:
    """Handlers for the reconciler's RDS interceptor. ``base`` holds the DB instance handlers: calls that are not
    about a cluster member go there."""

    def __init__(self, ext: AuroraClusters, base: dict[str, Handler]) -> None:
        self.ext = ext
        self.base = base
        self.globals = GlobalApi(ext)

    def handlers(self) -> dict[str, Handler]:
        return {
            "CreateDBCluster": self.create_cluster, "DeleteDBCluster": self.delete_cluster,
            "ModifyDBCluster": self.modify_cluster, "FailoverDBCluster": self.failover,
            "CreateDBInstance": self.create_member, "DeleteDBInstance": self.delete_member,
            "RebootDBInstance": self.reboot_member,
            "CreateDBClusterEndpoint": self.create_endpoint, "DescribeDBClusterEndpoints": self.describe_endpoints,
            "ModifyDBClusterEndpoint": self.modify_endpoint, "DeleteDBClusterEndpoint": self.delete_endpoint,
            **self.globals.handlers(),
        }

    def _base(self, name: str, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        handler = self.base.get(name)
        return handler(call, p, region) if handler is not None else call.forward()

    def _cluster(self, p: dict[str, str], region: str) -> AuroraCluster:
        ident = p.get("DBClusterIdentifier", "")
        cluster = self.ext.find(region, ident)
        if cluster is None:
            raise ApiError("DBClusterNotFoundFault", f"DBCluster {ident} not found.", 404)
        return cluster

    # -- clusters --------------------------------------------------------------------------------------------
    def create_cluster(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        rec = self.ext.rec
        engine = p.get("Engine", "").lower()
        if engine != ENGINE:
            version = rec.engine.bins.version if rec.engine else "15"
            raise ApiError("InvalidParameterValue", f"Invalid DB engine for a DB cluster: {p.get('Engine')!r}. dbdrill "
                           f"runs real DB clusters for Engine '{ENGINE}' only (PostgreSQL {version} underneath); "
                           "aurora-mysql, mysql and Multi-AZ DB clusters (Engine='postgres') are not emulated. Use "
                           f"Engine='{ENGINE}'.")
        global_id, primary = self.globals.secondary_of(p, region)
        if primary is not None:  # a secondary cluster of a global database: the primary's login and database
            p = {**p, "MasterUsername": primary.user, "MasterUserPassword": primary.password,
                 "DatabaseName": primary.db_name}
        user, password, db_name = master_login(p, "DatabaseName")
        port = int(p.get("Port") or PORT)
        settings = self._parameters(region, p.get("DBClusterParameterGroupName"))
        if _flag(p, "EnableIAMDatabaseAuthentication"):
            self._iam_available()
        response = call.forward()
        if response.status != 200:
            return response
        ident = p["DBClusterIdentifier"].lower()
        with rec.aws.lock:
            record = rec.aws.backend("rds", region).clusters[ident]
            if not p.get("EngineVersion") and rec.engine is not None:
                record.engine_version = rec.engine.bins.version
            record.status = "available"
            cluster = AuroraCluster(region=region, identifier=ident, arn=record.db_cluster_arn,
                                    resource_id=str(record.resource_id), writer_dns=record.endpoint,
                                    reader_dns=record.reader_endpoint, port=port, user=user, password=password,
                                    db_name=db_name, settings=settings)
        cluster.global_id, cluster.primary = global_id, primary
        self.ext.register(cluster)
        self.ext.failovers.emit(cluster, "cluster_created")
        logger.info("Aurora cluster %s/%s created (writer endpoint %s)", region, ident, cluster.writer_dns)
        return response

    def _parameters(self, region: str, group: str | None) -> dict[str, str]:
        """Server settings from a DB cluster parameter group (the ones in APPLIED_PARAMETERS)."""
        if not group:
            return {}
        rec = self.ext.rec
        with rec.aws.lock:
            found = rec.aws.backend("rds", region).db_cluster_parameter_groups.get(group)
            values = {name: str(v.get("ParameterValue")) for name, v in (found.parameters if found else {}).items()
                      if v.get("ParameterValue") is not None}
        if found is None:
            raise ApiError("DBClusterParameterGroupNotFound", f"DBClusterParameterGroup {group} not found.", 404)
        settings = {k: v for k, v in values.items() if k in APPLIED_PARAMETERS}
        for name in sorted(set(values) - set(settings)):
            logger.warning("parameter %s of group %s is recorded but not applied to the servers (applied: %s)", name,
                           group, ", ".join(APPLIED_PARAMETERS))
        for name, value in settings.items():
            if not re.fullmatch(r"[0-9A-Za-z]+", value):
                raise ApiError("InvalidParameterValue", f"Parameter {name} of group {group}: value {value!r} is not "
                               "valid (a number, optionally with a unit such as 4MB or 30s).")
        return settings

    def delete_cluster(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        cluster = self.ext.find(region, p.get("DBClusterIdentifier", ""))
        response = call.forward()  # moto refuses while members remain (DBClusterToBeDeletedHasActiveMembers)
        if response.status == 200 and cluster is not None:
            def work() -> None:
                self.ext.drop(cluster)
                self.ext.failovers.emit(cluster, "cluster_deleted")

            self.ext.run(cluster, work, what="deletion")
            return _with_tag(response, "Status", "deleting")
        return response

    def modify_cluster(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        cluster = self.ext.find(region, p.get("DBClusterIdentifier", ""))
        if cluster is None:
            return call.forward()
        if p.get("NewDBClusterIdentifier"):
            raise ApiError("InvalidParameterCombination", "dbdrill does not rename running DB clusters "
                           "(NewDBClusterIdentifier): create a new cluster instead.")
        password = p.get("MasterUserPassword")
        if password is not None:
            check_password(password)
        iam = _flag(p, "EnableIAMDatabaseAuthentication")
        if iam:
            self._iam_available()
        response = call.forward()
        if response.status != 200 or (password is None and iam is None):
            return response
        if iam is not None:
            self.ext.iam.set_enabled(cluster, iam)

        def work() -> None:
            from psycopg import sql

            writer = cluster.writer
            if password is not None and writer is not None and writer.host is not None:
                writer.host.cluster.sql(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(cluster.user), sql.Literal(password)))
                cluster.password = password
            self.ext.iam.sync(cluster)

        self.ext.run(cluster, work, what="modification")
        return response

    def _iam_available(self) -> None:
        from harness.errors import HarnessError

        try:
            self.ext.iam.check_available()
        except HarnessError as exc:
            raise ApiError("InvalidParameterCombination", f"dbdrill: {exc}") from None

    def failover(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        cluster = self.ext.find(region, p.get("DBClusterIdentifier", ""))
        if cluster is None:
            return call.forward()
        if cluster.primary is not None:
            raise ApiError("InvalidDBClusterStateFault", f"DB cluster {cluster.identifier} is a secondary cluster of "
                           f"global database {cluster.global_id}: its instances are read-only replicas of the "
                           "primary. Use failover_global_cluster / switchover_global_cluster to make it primary.")
        if cluster.status != "available" or cluster.busy:
            raise ApiError("InvalidDBClusterStateFault", f"DB cluster {cluster.identifier} is not in the available "
                           f"state (it is {'busy' if cluster.busy else cluster.status}): try again when it is.")
        readers = cluster.readers
        target = (p.get("TargetDBInstanceIdentifier") or "").lower() or None
        if target is not None:
            member = cluster.members.get(target)
            if member is None:
                raise ApiError("InvalidParameterValue", f"Cannot find target instance: {target} is not a member of "
                               f"{cluster.identifier} (readers: {', '.join(m.identifier for m in readers) or 'none'}).")
            if member is cluster.writer:
                raise ApiError("InvalidParameterValue", f"Target instance {target} is already the writer of "
                               f"{cluster.identifier}: name a reader.")
            if member not in readers:
                raise ApiError("InvalidDBInstanceState", f"Instance {target} should be in valid state for failover "
                               f"(it is {member.status}).")
        elif not readers:
            raise ApiError("InvalidDBClusterStateFault", f"Database cluster:{cluster.identifier} should have at least "
                           "two database instances in valid states for failover: add a reader first.")
        response = call.forward()
        if response.status != 200:
            return response
        self.ext.sync_writer_flags(cluster)  # moto flipped them already; the real failover decides
        self.ext.set_status(cluster, "failing-over")
        self.ext.run(cluster, lambda: self.ext.do_failover(cluster, target, crash=False, rejoin=True),
                     what="failover")
        return _with_tag(response, "Status", "failing-over")

    # -- members ---------------------------------------------------------------------------------------------
    def create_member(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        if not p.get("DBClusterIdentifier"):
            return self._base("CreateDBInstance", call, p, region)
        cluster = self.ext.find(region, p["DBClusterIdentifier"])
        if cluster is None:
            return call.forward()  # moto answers DBClusterNotFoundFault
        if p.get("MasterUsername") or p.get("MasterUserPassword"):
            raise ApiError("InvalidParameterCombination", "The requested DB Instance will be a member of a DB Cluster. "
                           "Set the master user name and password on the DB Cluster, not on its instances.")
        az = p.get("AvailabilityZone") or self.ext.next_az(cluster)
        if not (az.startswith(region) and len(az) == len(region) + 1):
            raise ApiError("InvalidParameterValue", f"AvailabilityZone {az!r} is not in region {region} "
                           f"(e.g. {region}a).")
        tier = int(p.get("PromotionTier") or 1)
        if not 0 <= tier <= 15:
            raise ApiError("InvalidParameterValue", f"PromotionTier must be 0-15, got {tier}.")
        response = call.forward()
        if response.status != 200:
            return response
        ident = p["DBInstanceIdentifier"].lower()
        rec = self.ext.rec
        with rec.aws.lock:
            db = rec.aws.backend("rds", region).databases[ident]
            db.status = "creating"
            db.availability_zone = az
            db.promotion_tier = tier
            member = Member(identifier=ident, arn=db.db_instance_arn, dns_name=db.address, az=az, promotion_tier=tier)
        cluster.members[ident] = member

        def work() -> None:
            try:
                self.ext.build_member(cluster, member)
            except BaseException:
                self.ext.set_member(cluster, member, status="failed")
                self.ext.failovers.emit(cluster, "failed", member=member)
                raise
            self.ext.failovers.emit(cluster, "created", member=member)

        self.ext.run(cluster, work, what=f"creation of {ident}")
        return _with_tag(response, "DBInstanceStatus", "creating")

    def delete_member(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        found = self.ext.member_of(region, p.get("DBInstanceIdentifier", ""))
        if found is None:
            return self._base("DeleteDBInstance", call, p, region)
        cluster, member = found
        response = call.forward()
        if response.status != 200:
            return response
        member.status = "deleting"

        def work() -> None:
            self.ext.remove_member(cluster, member)
            self.ext.failovers.emit(cluster, "deleted", member=member)

        self.ext.run(cluster, work, what=f"deletion of {member.identifier}")
        return _with_tag(response, "DBInstanceStatus", "deleting")

    def reboot_member(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        found = self.ext.member_of(region, p.get("DBInstanceIdentifier", ""))
        if found is None:
            return self._base("RebootDBInstance", call, p, region)
        cluster, member = found
        if _flag(p, "ForceFailover"):
            raise ApiError("InvalidParameterCombination", f"{member.identifier} is an Aurora DB instance: "
                           "ForceFailover does not apply; use failover_db_cluster(DBClusterIdentifier="
                           f"'{cluster.identifier}', TargetDBInstanceIdentifier=...).")
        if member.status != "available" or member.host is None:
            raise ApiError("InvalidDBInstanceState", f"Instance {member.identifier} is not currently in the "
                           f"available state (it is {member.status}).")
        response = call.forward()
        if response.status != 200:
            return response
        self.ext.set_member(cluster, member, status="rebooting")
        self.ext.run(cluster, lambda: self.ext.restart_member(cluster, member), what=f"reboot of {member.identifier}")
        return _with_tag(response, "DBInstanceStatus", "rebooting")

    # -- custom endpoints --------------------------------------------------------------------------------------
    def _endpoint_result(self, cluster: AuroraCluster, e: CustomEndpoint) -> dict[str, Any]:
        return {"DBClusterEndpointIdentifier": e.identifier, "DBClusterIdentifier": cluster.identifier,
                "DBClusterEndpointResourceIdentifier": f"cluster-endpoint-{e.identifier}", "Endpoint": e.dns_name,
                "Status": e.status, "EndpointType": "CUSTOM", "CustomEndpointType": e.endpoint_type,
                "StaticMembers": e.static, "ExcludedMembers": e.excluded, "DBClusterEndpointArn": e.arn}

    def _members_arg(self, cluster: AuroraCluster, values: list[str], what: str) -> list[str]:
        out = [v.lower() for v in values]
        unknown = [v for v in out if v not in cluster.members]
        if unknown:
            raise ApiError("InvalidParameterValue", f"{what} {', '.join(unknown)} not in cluster {cluster.identifier} "
                           f"(members: {', '.join(sorted(cluster.members)) or 'none'}).")
        return out

    def _endpoint_args(self, cluster: AuroraCluster, q: dict[str, Any], kind: str | None) -> tuple[str, list[str],
                                                                                                      list[str]]:
        endpoint_type = (q.get("EndpointType") or kind or "").upper()
        if endpoint_type not in CUSTOM_TYPES:
            raise ApiError("InvalidParameterValue", f"Invalid endpoint type {q.get('EndpointType')!r}: a custom "
                           f"endpoint is {' or '.join(CUSTOM_TYPES)}.")
        static = self._members_arg(cluster, q.get("StaticMembers") or [], "StaticMembers")
        excluded = self._members_arg(cluster, q.get("ExcludedMembers") or [], "ExcludedMembers")
        if static and excluded:
            raise ApiError("InvalidParameterCombination", "Specify StaticMembers or ExcludedMembers, not both.")
        return endpoint_type, static, excluded

    def create_endpoint(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        cluster = self._cluster(p, region)
        q = params(call)
        ident = str(q.get("DBClusterEndpointIdentifier", "")).lower()
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", ident) or ident.endswith("-") or "--" in ident:
            raise ApiError("InvalidParameterValue", f"DBClusterEndpointIdentifier {ident!r} is not valid: 1-63 "
                           "letters, digits or hyphens, starting with a letter, no trailing or double hyphen.")
        if any(ident in c.endpoints for c in self.ext.clusters.values() if c.region == region):
            raise ApiError("DBClusterEndpointAlreadyExistsFault", f"DB cluster endpoint {ident} already exists.")
        endpoint_type, static, excluded = self._endpoint_args(cluster, q, None)
        record = self.ext.moto_cluster(cluster)
        url_id = getattr(record, "url_identifier", "dbdrill")
        account = self.ext.rec.aws.account_id
        endpoint = CustomEndpoint(identifier=ident, arn=f"arn:aws:rds:{region}:{account}:cluster-endpoint:{ident}",
                                  dns_name=f"{ident}.cluster-custom-{url_id}.{region}.rds.amazonaws.com",
                                  endpoint_type=endpoint_type, static=static, excluded=excluded)
        with cluster.lock:
            cluster.endpoints[ident] = endpoint
            self.ext.publish(cluster)
        return respond("CreateDBClusterEndpoint", self._endpoint_result(cluster, endpoint))

    def describe_endpoints(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        """Every cluster's writer and reader endpoints and its custom endpoints, as AWS lists them."""
        want_cluster = (p.get("DBClusterIdentifier") or "").lower()
        want_endpoint = (p.get("DBClusterEndpointIdentifier") or "").lower()
        if want_cluster and self.ext.find(region, want_cluster) is None:
            raise ApiError("DBClusterNotFoundFault", f"DBCluster {want_cluster} not found.", 404)
        with self.ext.lock:
            clusters = [c for (r, _), c in sorted(self.ext.clusters.items()) if r == region]
        out: list[dict[str, Any]] = []
        for cluster in clusters:
            if want_cluster and cluster.identifier != want_cluster:
                continue
            if not want_endpoint:
                for kind, name in (("WRITER", cluster.writer_dns), ("READER", cluster.reader_dns)):
                    out.append({"DBClusterIdentifier": cluster.identifier, "Endpoint": name, "Status": "available",
                                "EndpointType": kind})
            out += [self._endpoint_result(cluster, e) for e in cluster.endpoints.values()
                    if not want_endpoint or e.identifier == want_endpoint]
        return respond("DescribeDBClusterEndpoints", {"DBClusterEndpoints": out})

    def _find_endpoint(self, p: dict[str, str], region: str) -> tuple[AuroraCluster, CustomEndpoint]:
        ident = (p.get("DBClusterEndpointIdentifier") or "").lower()
        with self.ext.lock:
            clusters = [c for (r, _), c in self.ext.clusters.items() if r == region]
        for cluster in clusters:
            if ident in cluster.endpoints:
                return cluster, cluster.endpoints[ident]
        raise ApiError("DBClusterEndpointNotFoundFault", f"DB cluster endpoint {ident} not found.", 404)

    def modify_endpoint(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        cluster, endpoint = self._find_endpoint(p, region)
        q = params(call)
        endpoint_type, static, excluded = self._endpoint_args(cluster, q, endpoint.endpoint_type)
        with cluster.lock:
            endpoint.endpoint_type = endpoint_type
            if "StaticMembers" in q or "ExcludedMembers" in q:
                endpoint.static, endpoint.excluded = static, excluded
            self.ext.publish(cluster)
        return respond("ModifyDBClusterEndpoint", self._endpoint_result(cluster, endpoint))

    def delete_endpoint(self, call: Call, p: dict[str, str], region: str) -> HttpResponse:
        cluster, endpoint = self._find_endpoint(p, region)
        with cluster.lock:
            cluster.endpoints.pop(endpoint.identifier, None)
            self.ext.rec.stack.dns.delete_record(endpoint.dns_name)
        endpoint.status = "deleting"
        return respond("DeleteDBClusterEndpoint", self._endpoint_result(cluster, endpoint))
