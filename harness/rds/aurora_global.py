"""Aurora global databases on real PostgreSQL: a primary cluster in one region and secondary clusters in others
whose members are read-only streaming replicas of the primary's writer (asynchronous across regions, as Aurora's
storage-level replication is: typically well under a second behind); the global writer endpoint names the primary's
writer; switchover (planned: the target catches up first, nothing is lost) and failover (AllowDataLoss: promote now,
the unreplicated tail is lost) make a secondary the primary and rebuild the old primary as a secondary -- at once if
it is reachable, when its region comes back if not (fenced meanwhile, so it can acknowledge nothing)."""
from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.rds import replication as repl
from harness.rds.fleet import PORT

if TYPE_CHECKING:
    from harness.rds.aurora import AuroraCluster, AuroraClusters, Member

logger = logging.getLogger(__name__)

FENCE = "aurora-global-demoted"


class GlobalDatabases:
    """The global-database work of an AuroraClusters extension."""

    def __init__(self, ext: AuroraClusters) -> None:
        self.ext = ext

    # -- membership ----------------------------------------------------------------------------------------
    def members(self, global_id: str) -> list[AuroraCluster]:
        with self.ext.lock:
            return [c for c in self.ext.clusters.values() if c.global_id == global_id]

    def primary_of(self, global_id: str) -> AuroraCluster | None:
        return next((c for c in self.members(global_id) if c.primary is None), None)

    def secondaries(self, primary: AuroraCluster) -> list[AuroraCluster]:
        with self.ext.lock:
            return [c for c in self.ext.clusters.values() if c.primary is primary]

    def source(self, cluster: AuroraCluster) -> Any:
        """The host a secondary's members stream from: the primary cluster's writer."""
        primary = cluster.primary
        writer = primary.writer if primary is not None else None
        if writer is None or writer.host is None:
            raise HarnessError(f"{cluster.identifier} is a secondary cluster but its primary has no writer to "
                               "replicate from", obj=cluster)
        return writer.host

    def build_member(self, cluster: AuroraCluster, member: Member) -> None:
        """A member of a secondary cluster: a cross-region streaming replica of the primary's writer."""
        member.host = self.ext.fleet.new_standby(self.source(cluster), cluster.region, member.az, member.identifier,
                                                 role="replica", port=cluster.port)
        if cluster.writer is None or cluster.writer.host is None:
            cluster.writer = member  # the secondary's primary instance: read-only until a global failover

    # -- following the primary -----------------------------------------------------------------------------
    def primary_writer_changed(self, primary: AuroraCluster) -> None:
        """The primary's writer moved (a regional failover): its secondaries stream from the new one."""
        for secondary in self.secondaries(primary):
            self.ext.run(secondary, lambda s=secondary: self.refollow(s),  # type: ignore[misc]
                         what="global replication re-pointing", wait=False)

    def refollow(self, cluster: AuroraCluster) -> None:
        source = self.source(cluster)
        for member in list(cluster.members.values()):
            if member.host is None:
                continue
            try:
                if member.identifier in cluster.rebuild:
                    self.rebuild(cluster, member)
                else:
                    self.ext.fleet.follow(member.host, source)
            except Exception:
                logger.exception("%s of %s could not follow the global primary", member.identifier,
                                 cluster.identifier)

    def rebuild(self, cluster: AuroraCluster, member: Member) -> None:
        """A member that was a writer of the old primary becomes a replica of the global primary: a new server
        cloned from it (cut off: later, when its network is back); its fence is lifted once it streams."""
        host = member.host
        if host is None or host.net_cuts:
            return
        fleet = self.ext.fleet
        source = self.source(cluster)
        if host.cluster.running() and host.frozen is None:
            host.cluster.freeze()  # what it held goes with it; a fresh server is cloned below
            host.frozen = host.cluster
        fleet.fresh_server(host)
        fleet._link(host, source)
        repl.clone_into(host.cluster, source.cluster, upstream=(str(host.link_address), PORT))
        repl.wait_streaming(source.cluster, host.cluster, timeout=30)
        fleet.serve(host)
        host.role, host.expected_down = "replica", False
        host.client_cuts.discard(FENCE)
        fleet.sync_cuts()
        cluster.rebuild.discard(member.identifier)
        self.ext.set_member(cluster, member, status="available")

    # -- switchover and failover ---------------------------------------------------------------------------
    def switch(self, target: AuroraCluster, *, allow_data_loss: bool) -> float:
        """Make the secondary ``target`` the primary of its global database. Planned (``allow_data_loss``
        False): the old primary's writer is fenced, the target catches up with it, nothing is lost. Failover:
        the target is promoted at once (what had not reached it is lost). The old primary becomes a secondary."""
        import time

        old = target.primary
        head = target.writer
        if old is None:
            raise HarnessError(f"{target.identifier} is already the primary cluster", obj=target)
        if head is None or head.host is None or not head.host.cluster.running():
            raise HarnessError(f"secondary cluster {target.identifier} has no available instance to promote",
                               obj=target)
        t0 = time.perf_counter()
        fleet = self.ext.fleet
        old_writer = old.writer
        old_host = old_writer.host if old_writer is not None else None
        if old_host is not None:
            old_host.client_cuts.add(FENCE)  # nothing more is acknowledged there: switchover or not
            fleet.sync_cuts()
        try:
            if not allow_data_loss:
                if old_host is None or old_host.net_cuts or not old_host.cluster.running():
                    raise HarnessError(f"switchover needs the primary {old.identifier} reachable; use a failover "
                                       "(AllowDataLoss) to promote the secondary now", obj=target)
                repl.wait_caught_up(old_host.cluster, head.host.cluster, 30)
            self.ext.set_status(target, "failing-over")
            repl.promote(head.host.cluster)
        except BaseException:
            if old_host is not None:  # nothing changed: the primary goes on
                old_host.client_cuts.discard(FENCE)
                fleet.sync_cuts()
            self.ext.set_status(target, "available")
            raise
        fleet.unlink(head.host)
        head.host.role = "primary"
        target.primary, old.primary = None, target
        for member in old.members.values():
            if member is old_writer:
                old.rebuild.add(member.identifier)
        self.ext.set_status(target, "available")
        took = time.perf_counter() - t0
        for cluster in (target, old):
            self.ext.publish(cluster)
            self.ext.sync_writer_flags(cluster)
        self.flags(target)
        self.ext.notify_writer(target)
        self.ext.notify_writer(old)
        logger.info("Aurora global %s: %s is the primary now (%s in %.3fs)", target.global_id, target.identifier,
                    "failover" if allow_data_loss else "switchover", took)
        # The target's other members stream from its new writer; the old primary's, from it too.
        self.ext.run(target, lambda: self._follow_head(target), what="global re-pointing", wait=False)
        self.ext.run(old, lambda: self.refollow(old), what="global demotion", wait=False)
        return took

    def _follow_head(self, cluster: AuroraCluster) -> None:
        writer = cluster.writer
        if writer is None or writer.host is None:
            return
        for member in list(cluster.members.values()):
            if member is not writer and member.host is not None:
                with contextlib.suppress(Exception):
                    self.ext.fleet.follow(member.host, writer.host)

    def detach(self, cluster: AuroraCluster) -> None:
        """RemoveFromGlobalCluster: a secondary becomes a standalone cluster (its writer promoted, replication
        from the primary stopped for good); a primary just leaves the global database."""
        cluster.global_id = None
        if cluster.primary is None:
            return
        head = cluster.writer
        cluster.primary = None
        if head is not None and head.host is not None:
            repl.promote(head.host.cluster)
            self.ext.fleet.unlink(head.host)
            head.host.role = "primary"
        self.ext.publish(cluster)
        self._follow_head(cluster)

    def flags(self, primary: AuroraCluster) -> None:
        """moto's records: IsWriter of each member cluster of the global database."""
        with self.ext.rec.aws.lock:
            for cluster in self.members(primary.global_id or ""):
                record = self.ext.moto_cluster(cluster)
                if record is not None:
                    record.is_writer = cluster.primary is None

    # -- DNS -----------------------------------------------------------------------------------------------
    def publish(self, cluster: AuroraCluster) -> None:
        """The global writer endpoint (moto's GlobalCluster endpoint) names the primary cluster's writer."""
        if cluster.global_id is None or cluster.primary is not None:
            return
        found = self.record(cluster.global_id)
        if found is not None:
            from harness.rds.aurora import DNS_TTL

            self.ext.rec.stack.dns.set_record(found.endpoint, "CNAME", [cluster.writer_dns], ttl=DNS_TTL)

    def record(self, global_id: str) -> Any:
        """moto's GlobalCluster (kept by the region it was created in), or None."""
        aws = self.ext.rec.aws
        with aws.lock:
            for region in aws.regions:
                found = aws.backend("rds", region).global_clusters.get(global_id)
                if found is not None:
                    return found
        return None


class GlobalApi:
    """The RDS API of global databases: CreateGlobalCluster from an existing cluster, CreateDBCluster as a
    secondary, FailoverGlobalCluster / SwitchoverGlobalCluster (moto has neither: answered here),
    RemoveFromGlobalCluster."""

    def __init__(self, ext: AuroraClusters) -> None:
        self.ext = ext

    def handlers(self) -> dict[str, Any]:
        return {"CreateGlobalCluster": self.create, "FailoverGlobalCluster": self.failover,
                "SwitchoverGlobalCluster": self.switchover, "RemoveFromGlobalCluster": self.remove}

    def secondary_of(self, p: dict[str, str], region: str) -> tuple[str | None, AuroraCluster | None]:
        """For CreateDBCluster: the global database it joins (or None) and, for a secondary, its primary."""
        from harness.rds.api import ApiError

        gid = (p.get("GlobalClusterIdentifier") or "").lower() or None
        if gid is None:
            return None, None
        if self.ext.globals.record(gid) is None:
            raise ApiError("GlobalClusterNotFoundFault", f"Global cluster {gid} not found.", 404)
        primary = self.ext.globals.primary_of(gid)
        if primary is None:
            return gid, None
        if p.get("MasterUsername") or p.get("MasterUserPassword"):
            raise ApiError("InvalidParameterCombination", "A secondary cluster of a global database takes its master "
                           "user from the primary: do not specify MasterUsername or MasterUserPassword.")
        if primary.region == region or any(c.region == region for c in self.ext.globals.members(gid)):
            raise ApiError("InvalidParameterValue", f"Global cluster {gid} already has a cluster in {region}: "
                           "create the secondary in another region.")
        return gid, primary

    def create(self, call: Any, p: dict[str, str], region: str) -> Any:
        response = call.forward()
        source = p.get("SourceDBClusterIdentifier") or ""
        if response.status == 200 and source:
            parts = source.split(":")
            cluster = self.ext.find(parts[3], parts[-1]) if len(parts) >= 7 else self.ext.find(region, source)
            if cluster is not None:
                cluster.global_id = p["GlobalClusterIdentifier"].lower()
                self.ext.globals.flags(cluster)
                self.ext.publish(cluster)
        return response

    def _member(self, gid: str, ref: str) -> AuroraCluster | None:
        """The member cluster of global database ``gid`` named by ``ref``: its ARN or its identifier."""
        return next((c for c in self.ext.globals.members(gid) if ref in (c.arn, c.identifier)
                     or c.identifier == ref.lower()), None)

    def _target(self, p: dict[str, str]) -> tuple[str, AuroraCluster]:
        from harness.rds.api import ApiError

        gid = (p.get("GlobalClusterIdentifier") or "").lower()
        if self.ext.globals.record(gid) is None:
            raise ApiError("GlobalClusterNotFoundFault", f"Global cluster {gid} not found.", 404)
        ref = p.get("TargetDbClusterIdentifier") or ""
        target = self._member(gid, ref)
        if target is None:
            raise ApiError("DBClusterNotFoundFault", f"DBCluster {ref} is not a member of global cluster {gid}.", 404)
        if target.primary is None:
            raise ApiError("InvalidGlobalClusterStateFault", f"{target.identifier} is already the primary cluster of "
                           f"global cluster {gid}: name a secondary cluster.")
        if target.busy or target.status != "available":
            raise ApiError("InvalidDBClusterStateFault", f"DB cluster {target.identifier} is not available.")
        return gid, target

    def failover(self, call: Any, p: dict[str, str], region: str) -> Any:
        from harness.rds.api import ApiError

        gid, target = self._target(p)
        planned = (p.get("Switchover") or "").lower() == "true"
        if not planned and (p.get("AllowDataLoss") or "").lower() != "true":
            raise ApiError("InvalidParameterCombination", "FailoverGlobalCluster needs AllowDataLoss=True (a failover "
                           "promotes the secondary at once, losing what it had not received) or Switchover=True.")
        return self._switch(call, gid, target, allow_data_loss=not planned, action="FailoverGlobalCluster")

    def switchover(self, call: Any, p: dict[str, str], region: str) -> Any:
        gid, target = self._target(p)
        return self._switch(call, gid, target, allow_data_loss=False, action="SwitchoverGlobalCluster")

    def _switch(self, call: Any, gid: str, target: AuroraCluster, *, allow_data_loss: bool, action: str) -> Any:
        from harness.rds.api import ApiError

        old = target.primary
        assert old is not None

        def work() -> None:
            with old.lock:
                self.ext.globals.switch(target, allow_data_loss=allow_data_loss)

        try:
            self.ext.run(target, work, what="global failover" if allow_data_loss else "global switchover", wait=True)
        except HarnessError as exc:
            raise ApiError("InvalidGlobalClusterStateFault", str(exc)) from None
        return self._global_response(call, gid, action)

    def remove(self, call: Any, p: dict[str, str], region: str) -> Any:
        response = call.forward()
        ref = p.get("DbClusterIdentifier") or ""
        if response.status == 200:
            cluster = self._member((p.get("GlobalClusterIdentifier") or "").lower(), ref)
            if cluster is not None:
                self.ext.run(cluster, lambda: self.ext.globals.detach(cluster), what="removal from the global "
                             "database", wait=True)
        return response

    def _global_response(self, call: Any, gid: str, action: str) -> Any:
        """``action``'s answer carrying the GlobalCluster, as moto's DescribeGlobalClusters serialises it."""
        import re
        from urllib.parse import urlencode

        described = call.forward(urlencode({"Action": "DescribeGlobalClusters", "Version": "2014-10-31",
                                            "GlobalClusterIdentifier": gid}).encode())
        if described.status != 200:
            return described
        xml = described.body.decode()
        start, end = xml.index("<GlobalClusters>") + len("<GlobalClusters>"), xml.rindex("</GlobalClusters>")
        inner = xml[start:end].strip()
        # The list's one element, <GlobalClusterMember>...</GlobalClusterMember>, is the GlobalCluster itself.
        inner = re.sub(r"^<GlobalClusterMember>", "<GlobalCluster>", inner)
        inner = re.sub(r"</GlobalClusterMember>$", "</GlobalCluster>", inner)
        body = xml[:xml.index("<DescribeGlobalClustersResult>")] + f"<{action}Result>{inner}</{action}Result>" + \
            xml[xml.index("</DescribeGlobalClustersResult>") + len("</DescribeGlobalClustersResult>"):]
        body = body.replace("DescribeGlobalClustersResponse", f"{action}Response")
        described.body = body.encode()
        return described
