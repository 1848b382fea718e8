"""Aurora PostgreSQL clusters on real PostgreSQL: a writer and readers (streaming standbys of the writer), each a
fleet host behind its own fault proxy; the cluster (writer), reader (rotating CNAME over the readers) and custom
endpoints as DNS names with TTL 5 s; failover that fences the old writer as a blackhole, promotes the chosen
reader, re-points the others and flips DNS, then rebuilds the old writer as a reader; automatic failover when the
writer dies. The RDS API side is in harness/rds/aurora_api.py."""
from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.rds import replication as repl
from harness.rds.aurora_failover import Failovers
from harness.rds.aurora_global import GlobalDatabases
from harness.rds.aurora_iam import AuroraIam
from harness.rds.aurora_model import (  # noqa: F401 - re-exported: the extension's data
    APPLIED_PARAMETERS,
    DNS_TTL,
    ENGINE,
    TIMINGS,
    AuroraCluster,
    AuroraTimings,
    CustomEndpoint,
    Member,
)
from harness.rds.reconciler import API_WAIT_TIMEOUT, RdsExtension
from harness.wait import wait_until

if TYPE_CHECKING:
    from harness.rds.fleet import Fleet
    from harness.rds.reconciler import RdsReconciler

logger = logging.getLogger(__name__)
def aurora(rec: RdsReconciler) -> AuroraClusters:
    """The reconciler's Aurora extension (HarnessError if it is not loaded)."""
    for ext in rec.extensions:
        if isinstance(ext, AuroraClusters):
            return ext
    raise HarnessError("the Aurora extension is not loaded in this RDS reconciler", obj=rec)


class AuroraClusters(RdsExtension):
    """Every Aurora cluster of one reconciler, their hosts (in the reconciler's fleet) and DNS names."""

    def __init__(self, rec: RdsReconciler) -> None:
        self.rec = rec
        self.timings = TIMINGS[rec.settings.time_profile]
        self.clusters: dict[tuple[str, str], AuroraCluster] = {}
        self.lock = threading.RLock()
        self.iam = AuroraIam(self)
        self.failovers = Failovers(self)
        self.globals = GlobalDatabases(self)
        self.stopping = threading.Event()
        self._cut_ids = itertools.count(1)
        self._monitor = threading.Thread(target=self.failovers.watch, name="dbdrill-aurora-monitor", daemon=True)
        self._monitor.start()

    # -- extension hooks -------------------------------------------------------------------------------------
    def handlers(self, base: dict[str, Any]) -> dict[str, Any]:
        from harness.rds.aurora_api import AuroraApi

        return AuroraApi(self, base).handlers()

    def reset(self) -> None:
        with self.lock:
            clusters = list(self.clusters.values())
        for cluster in clusters:
            try:
                self.drop(cluster)
            except Exception:
                logger.exception("removing %s failed", cluster)

    def stop(self) -> None:
        self.stopping.set()
        self._monitor.join(10)
        self.reset()

    @property
    def fleet(self) -> Fleet:
        return self.rec.fleet

    # -- lookup ----------------------------------------------------------------------------------------------
    def register(self, cluster: AuroraCluster) -> None:
        with self.lock:
            self.clusters[(cluster.region, cluster.identifier)] = cluster

    def find(self, region: str, identifier: str) -> AuroraCluster | None:
        with self.lock:
            return self.clusters.get((region, identifier.lower()))

    def cluster(self, identifier: str, region: str | None = None) -> AuroraCluster:
        """The running cluster ``identifier`` (in ``region``, or the only region that has it)."""
        ident = identifier.lower()
        with self.lock:
            found = [c for (r, name), c in self.clusters.items() if name == ident and region in (None, r)]
        if len(found) == 1:
            return found[0]
        if not found:
            raise HarnessError(f"no Aurora cluster {identifier!r}{f' in {region}' if region else ''}: create it with "
                               "create_db_cluster(Engine='aurora-postgresql') first", obj=self)
        raise HarnessError(f"Aurora cluster {identifier!r} exists in several regions: pass region=", obj=self)

    def member_of(self, region: str, identifier: str) -> tuple[AuroraCluster, Member] | None:
        """The cluster and member record of DB instance ``identifier``, if it is an Aurora member."""
        ident = identifier.lower()
        with self.lock:
            clusters = [c for (r, _), c in self.clusters.items() if r == region]
        for cluster in clusters:
            if ident in cluster.members:
                return cluster, cluster.members[ident]
        return None

    # -- moto's records --------------------------------------------------------------------------------------
    def moto_cluster(self, cluster: AuroraCluster) -> Any:
        with self.rec.aws.lock:
            return self.rec.aws.backend("rds", cluster.region).clusters.get(cluster.identifier)

    def set_status(self, cluster: AuroraCluster, status: str) -> None:
        cluster.status = status
        with self.rec.aws.lock:
            record = self.rec.aws.backend("rds", cluster.region).clusters.get(cluster.identifier)
            if record is not None:
                record.status = status

    def set_member(self, cluster: AuroraCluster, member: Member, **attrs: Any) -> None:
        """Write attributes on moto's record of ``member`` (status, is_cluster_writer, availability_zone...)."""
        if "status" in attrs:
            member.status = attrs["status"]
        with self.rec.aws.lock:
            db = self.rec.aws.backend("rds", cluster.region).databases.get(member.identifier)
            if db is not None:
                for key, value in attrs.items():
                    setattr(db, key, value)

    def sync_writer_flags(self, cluster: AuroraCluster) -> None:
        for member in list(cluster.members.values()):
            self.set_member(cluster, member, is_cluster_writer=member is cluster.writer)

    def iam_enabled(self, cluster: AuroraCluster) -> bool:
        record = self.moto_cluster(cluster)
        return bool(getattr(record, "iam_auth", False)) if record is not None else False

    def promotion_tier(self, cluster: AuroraCluster, member: Member) -> int:
        with self.rec.aws.lock:
            db = self.rec.aws.backend("rds", cluster.region).databases.get(member.identifier)
            return int(getattr(db, "promotion_tier", member.promotion_tier) or 0) if db is not None else \
                member.promotion_tier

    # -- running work ----------------------------------------------------------------------------------------
    def run(self, cluster: AuroraCluster, fn: Callable[[], Any], *, what: str, wait: bool | None = None) -> Any:
        """Run ``fn`` with the cluster's lock on the reconciler's pool, the cluster counted busy meanwhile. With
        ``wait`` (default: the profile's api_waits) return its result; otherwise return at once."""
        with self.lock:
            cluster.busy += 1

        def work() -> Any:
            try:
                with cluster.lock:
                    return fn()
            finally:
                self._idle(cluster)

        future = self.rec.spawn(work, what=f"Aurora {what} of {cluster.region}/{cluster.identifier}",
                                on_error=lambda: None)
        if wait if wait is not None else self.rec.timings.api_waits:
            return future.result(API_WAIT_TIMEOUT)
        return None

    def _idle(self, cluster: AuroraCluster) -> None:
        with self.lock:
            cluster.busy -= 1

    def wait_available(self, identifier: str, region: str | None = None, timeout: float = 60.0) -> AuroraCluster:
        """Until the cluster is available, idle, and every member is available (old writers rejoined)."""
        cluster = self.cluster(identifier, region)

        def ready() -> bool:
            return cluster.status == "available" and not cluster.busy and not cluster.fenced and \
                all(m.status == "available" for m in cluster.members.values())

        wait_until(ready, timeout, interval=0.01, what=f"Aurora cluster {identifier} to be available")
        return cluster

    def wait_replicated(self, identifier: str, region: str | None = None, timeout: float = 30.0) -> None:
        """Until every reader has replayed everything the writer had written when called."""
        cluster = self.cluster(identifier, region)
        writer = cluster.writer
        if writer is None or writer.host is None:
            raise HarnessError(f"cluster {identifier} has no writer", obj=cluster)
        for member in cluster.readers:
            assert member.host is not None
            repl.wait_caught_up(writer.host.cluster, member.host.cluster, timeout)

    # -- members ---------------------------------------------------------------------------------------------
    def next_az(self, cluster: AuroraCluster) -> str:
        return f"{cluster.region}{'abc'[len(cluster.members) % 3]}"

    def build_member(self, cluster: AuroraCluster, member: Member) -> None:
        """Create the member's real server: the writer if the cluster has none, else a reader streaming from it."""
        fleet = self.fleet
        if cluster.primary is not None:
            self.globals.build_member(cluster, member)
        elif cluster.writer is None or cluster.writer.host is None:
            host = fleet.new_primary(cluster.region, member.az, member.identifier, port=cluster.port,
                                     user=cluster.user, password=cluster.password, db_name=cluster.db_name,
                                     settings=cluster.settings)
            member.host = host
            cluster.writer = member
        else:
            member.host = fleet.new_standby(cluster.writer.host, cluster.region, member.az, member.identifier,
                                            role="replica", port=cluster.port)
        self.set_member(cluster, member, status="available", availability_zone=member.az)
        self.sync_writer_flags(cluster)
        self.iam.sync(cluster)
        self.publish(cluster)
        if cluster.writer is member:
            self.notify_writer(cluster)

    def remove_member(self, cluster: AuroraCluster, member: Member) -> None:
        """Delete one member: a writer with readers fails over first (as Aurora does), then the host goes."""
        if member is cluster.writer and cluster.readers:
            self.do_failover(cluster, None, crash=False, rejoin=False)
        with contextlib.suppress(ValueError):
            cluster.fenced.remove(member)
        cluster.members.pop(member.identifier, None)
        self.failovers.sync_quorum(cluster)  # commits stop waiting for it before it goes
        if cluster.writer is member:
            cluster.writer = None
        with contextlib.suppress(Exception):
            self.rec.stack.dns.delete_record(member.dns_name)
        if member.host is not None:
            self.fleet.remove_host(member.host)
        self.publish(cluster)
        self.notify_writer(cluster)

    def drop(self, cluster: AuroraCluster) -> None:
        """Remove a cluster entirely: hosts, DNS names, moto's records."""
        with self.lock:
            if self.clusters.get((cluster.region, cluster.identifier)) is cluster:
                del self.clusters[(cluster.region, cluster.identifier)]
        with cluster.lock:
            for member in list(cluster.members.values()):
                with contextlib.suppress(Exception):
                    self.rec.stack.dns.delete_record(member.dns_name)
                if member.host is not None:
                    self.fleet.remove_host(member.host)
            cluster.members.clear()
            cluster.writer = None
            self.unpublish(cluster)
        with self.rec.aws.lock, contextlib.suppress(Exception):
            backend = self.rec.aws.backend("rds", cluster.region)
            for ident in [k for k, v in backend.databases.items()
                          if getattr(v, "db_cluster_identifier", None) == cluster.identifier]:
                backend.databases.pop(ident, None)
            backend.clusters.pop(cluster.identifier, None)

    # -- DNS -------------------------------------------------------------------------------------------------
    def publish(self, cluster: AuroraCluster) -> None:
        """Instance endpoints answer their host; the cluster endpoint the writer; the reader endpoint rotates over
        the readers (the writer when there are none, as on Aurora); custom endpoints over their members."""
        dns = self.rec.stack.dns
        for member in list(cluster.members.values()):
            if member.host is not None:
                dns.set_record(member.dns_name, "A", [member.host.address], ttl=DNS_TTL)
        writer = cluster.writer
        if writer is None or writer.host is None:
            self.unpublish(cluster)
            return
        dns.set_record(cluster.writer_dns, "A", [writer.host.address], ttl=DNS_TTL)
        self.globals.publish(cluster)
        readers = [m.dns_name for m in cluster.readers] or [writer.dns_name]
        dns.set_record(cluster.reader_dns, "CNAME", _paired(readers), ttl=DNS_TTL)
        for endpoint in list(cluster.endpoints.values()):
            names = [m.dns_name for m in self.endpoint_members(cluster, endpoint)]
            if names:
                dns.set_record(endpoint.dns_name, "CNAME", _paired(names), ttl=DNS_TTL)
            else:
                with contextlib.suppress(Exception):
                    dns.delete_record(endpoint.dns_name)

    def unpublish(self, cluster: AuroraCluster) -> None:
        dns = self.rec.stack.dns
        for name in (cluster.writer_dns, cluster.reader_dns, *(e.dns_name for e in cluster.endpoints.values())):
            with contextlib.suppress(Exception):
                dns.delete_record(name)

    def endpoint_members(self, cluster: AuroraCluster, endpoint: CustomEndpoint) -> list[Member]:
        """Members a custom endpoint reaches now: its static members (or all but the excluded), readers only for
        type READER; never a fenced old writer."""
        live = [m for m in cluster.members.values()
                if m.host is not None and m.status == "available" and m not in cluster.fenced and not m.host.net_cuts]
        chosen = [m for m in live if m.identifier in endpoint.static] if endpoint.static else \
            [m for m in live if m.identifier not in endpoint.excluded]
        if endpoint.endpoint_type == "READER":
            chosen = [m for m in chosen if m is not cluster.writer]
        return chosen

    def republish(self) -> None:
        with self.lock:
            clusters = list(self.clusters.values())
        for cluster in clusters:
            self.publish(cluster)

    def notify_writer(self, cluster: AuroraCluster) -> None:
        """Other extensions (RDS Proxies tracking the cluster) follow its new writer; so do its secondaries."""
        if cluster.primary is None and cluster.global_id is not None:
            self.globals.primary_writer_changed(cluster)
        for ext in self.rec.extensions:
            follow = getattr(ext, "cluster_writer_changed", None)
            if follow is None:
                continue
            try:
                follow(cluster.region, cluster.identifier)
            except Exception:
                logger.exception("%s could not follow %s's new writer", ext, cluster.identifier)

    def cluster_writer(self, region: str, identifier: str) -> tuple[str, int] | None:
        """Where the cluster's writer is reached now (its host's address and port), or None."""
        cluster = self.find(region, identifier)
        writer = cluster.writer if cluster is not None else None
        if cluster is None or writer is None or writer.host is None or writer in cluster.fenced:
            return None
        return writer.host.endpoint

    # -- failover --------------------------------------------------------------------------------------------
    def failover(self, identifier: str, target: str | None = None, *, region: str | None = None,
                 crash: bool = False, rejoin: bool = True) -> float:
        """Fail the cluster over now; seconds from the fence to the DNS flip. ``rejoin`` False keeps the old writer
        fenced (a blackhole) until ``rejoin_old_writers``."""
        cluster = self.cluster(identifier, region)
        took: float = self.run(cluster, lambda: self.do_failover(cluster, target, crash=crash, rejoin=rejoin),
                               what="failover", wait=True)
        return took

    def do_failover(self, cluster: AuroraCluster, target: str | None, *, crash: bool, rejoin: bool) -> float:
        """One failover with the cluster's lock held (see harness/rds/aurora_failover.py); fence-to-flip seconds."""
        return self.failovers.do(cluster, target, crash=crash, rejoin=rejoin)

    def rejoin_old_writers(self, identifier: str, region: str | None = None) -> None:
        """Bring back every fenced old writer of the cluster as a reader (after ``failover(rejoin=False)``)."""
        cluster = self.cluster(identifier, region)

        def work() -> None:
            for member in list(cluster.fenced):
                self.failovers.rejoin(cluster, member)

        self.run(cluster, work, what="rejoin", wait=True)

    # -- faults ----------------------------------------------------------------------------------------------
    def kill_writer(self, identifier: str, region: str | None = None) -> Member:
        """SIGKILL the writer's server: the monitor fails over to a reader (or restarts a lone writer)."""
        cluster = self.cluster(identifier, region)
        writer = cluster.writer
        if writer is None or writer.host is None:
            raise HarnessError(f"cluster {identifier} has no writer to kill", obj=cluster)
        writer.host.cluster.kill()
        logger.info("killed the writer %s of %s", writer.identifier, identifier)
        return writer

    def set_reader_lag(self, identifier: str, reader: str, seconds: float | None, region: str | None = None) -> None:
        """Real lag on a reader: each commit is applied ``seconds`` after the writer made it (None: no delay)."""
        cluster = self.cluster(identifier, region)
        member = cluster.member(reader)
        if member is cluster.writer or member.host is None:
            raise HarnessError(f"{reader} is the writer of {identifier}: reader lag needs a reader", obj=cluster)
        repl.set_apply_delay(member.host.cluster, seconds)

    def az_down(self, region: str, az: str, reason: str) -> None:
        """Members in ``az`` are cut off; a cluster whose writer is there fails over to a reader elsewhere."""
        self._each(region, "AZ outage", lambda c: self.failovers.cut(c, reason, az=az, failover=True))

    def az_up(self, region: str, az: str, reason: str) -> None:
        self._each(region, "AZ recovery", lambda c: self.failovers.uncut(c, reason))

    def region_down(self, region: str) -> str:
        """Every member of every cluster in ``region`` is cut off (no failover: there is nowhere to go). Returns
        the reason to give ``region_up``."""
        reason = f"aurora-region-{next(self._cut_ids)}"
        self._each(region, "region outage", lambda c: self.failovers.cut(c, reason, az=None, failover=False))
        return reason

    def region_up(self, region: str, reason: str) -> None:
        self._each(region, "region recovery", lambda c: self.failovers.uncut(c, reason))

    def _each(self, region: str, what: str, fn: Callable[[AuroraCluster], None]) -> None:
        for cluster in self.in_region(region):
            self.run(cluster, lambda c=cluster: fn(c), what=what, wait=True)  # type: ignore[misc]

    def in_region(self, region: str) -> list[AuroraCluster]:
        with self.lock:
            return [c for c in self.clusters.values() if c.region == region]

    def restart_member(self, cluster: AuroraCluster, member: Member) -> None:
        """Reboot one member (its connections drop; crash recovery as on a restart)."""
        self.failovers.restart(cluster, member)


def _paired(names: list[str]) -> list[str]:
    """Each target twice in a row for a CNAME that rotates one step per query: a client's getaddrinfo asks A then
    AAAA, so both questions of one lookup land on the same member and consecutive lookups on consecutive members
    (with single targets, two readers would alternate per question and every lookup would get the same one)."""
    return [n for name in names for n in (name, name)]


def extension(rec: RdsReconciler) -> AuroraClusters:
    return AuroraClusters(rec)

