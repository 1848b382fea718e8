"""Aurora failover on real PostgreSQL: the target chosen as Aurora does, the old writer fenced as a blackhole,
promotion, DNS flip and proxies told, readers re-pointed, the old writer rebuilt as a reader; and the monitor that
fails over when the writer dies and restarts dead members."""
from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import time
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.rds import replication as repl
from harness.rds.fleet import PORT

if TYPE_CHECKING:
    from harness.rds.aurora import AuroraCluster, AuroraClusters, Member
    from harness.rds.fleet import Host

logger = logging.getLogger(__name__)

FENCE = "aurora-failover"


class Failovers:
    """Failover and recovery work of an AuroraClusters extension (called with the cluster's lock held)."""

    def __init__(self, ext: AuroraClusters) -> None:
        self.ext = ext

    # -- failover --------------------------------------------------------------------------------------------
    def choose_target(self, cluster: AuroraCluster) -> Member:
        """Aurora's pick: the lowest promotion tier; among equals the reader with the most WAL received (after a
        crash, the fewest commits are lost)."""
        candidates = [m for m in cluster.readers if m.host is not None and m.host.cluster.running()]
        if not candidates:
            raise HarnessError(f"cluster {cluster.identifier} has no available reader to fail over to", obj=cluster)

        def received(m: Member) -> int:
            assert m.host is not None
            try:
                return int(m.host.cluster.value(
                    "SELECT pg_wal_lsn_diff(coalesce(pg_last_wal_receive_lsn(), '0/0'), '0/0')") or 0)
            except Exception:
                return -1

        return min(candidates, key=lambda m: (self.ext.promotion_tier(cluster, m), -received(m), m.identifier))

    def do(self, cluster: AuroraCluster, target: str | None, *, crash: bool, rejoin: bool) -> float:
        """Fence the writer (clients blackholed), let the chosen reader replay everything (a planned failover loses
        nothing, as Aurora's shared storage would not), freeze or bury the old server, promote, flip DNS, tell the
        proxies. Readers follow and the old writer rejoins in the background."""
        old = cluster.writer
        if old is None or old.host is None:
            raise HarnessError(f"cluster {cluster.identifier} has no writer to fail over from", obj=cluster)
        new = cluster.member(target) if target else self.choose_target(cluster)
        if new is old or new not in cluster.readers or new.host is None:
            raise HarnessError(f"{new.identifier} is not an available reader of {cluster.identifier}: choose one "
                               f"of {', '.join(m.identifier for m in cluster.readers) or 'none'}", obj=cluster)
        t0 = time.perf_counter()
        self.ext.set_status(cluster, "failing-over")
        self.emit(cluster, "cluster_failover_same_az" if new.az == old.az else "cluster_failover_cross_az",
                  name=new.identifier)
        old_host, new_host = old.host, new.host
        old_host.client_cuts.add(FENCE)
        self.ext.fleet.sync_cuts()
        old_host.expected_down = True
        if crash or not old_host.cluster.running():
            old_host.cluster.kill()
            self.ext.fleet.park(old_host)
        else:
            with contextlib.suppress(Exception):
                repl.wait_caught_up(old_host.cluster, new_host.cluster, timeout=5)
            # Frozen, not shut down: a shutdown would close its clients' connections; a fenced host's clients see
            # nothing at all and must time out.
            old_host.cluster.freeze()
            old_host.frozen = old_host.cluster
        if self.ext.timings.failover_delay:
            self.ext.rec.pause(self.ext.timings.failover_delay)
        try:
            repl.promote(new_host.cluster)
        except Exception:
            self._unfence(cluster, old_host)
            self.emit(cluster, "cluster_failover_reverting", name=old.identifier)
            self.emit(cluster, "cluster_failover_failed")
            raise
        self.ext.fleet.unlink(new_host)
        new_host.role, old_host.role = "primary", "replica"
        cluster.writer = new
        cluster.fenced.append(old)
        self.sync_quorum(cluster)  # a clone's copied settings may name readers not yet following it
        self.ext.set_member(cluster, old, status="rebooting")
        self.ext.publish(cluster)
        took = time.perf_counter() - t0
        cluster.failovers += 1
        self.ext.sync_writer_flags(cluster)
        self.ext.notify_writer(cluster)
        self.ext.set_status(cluster, "available")
        self.emit(cluster, "cluster_failover_completed", name=new.identifier)
        logger.info("Aurora %s failed over from %s to %s in %.3fs", cluster.identifier, old.identifier,
                    new.identifier, took)
        self.ext.run(cluster, lambda: self._repoint_readers(cluster), what="reader re-pointing", wait=False)
        if rejoin:
            self.ext.rec.spawn(lambda: self._rejoin_later(cluster, old), what=f"Aurora rejoin of {old.identifier}",
                           on_error=lambda: None)
        return took

    def _unfence(self, cluster: AuroraCluster, host: Host) -> None:
        """A failover that could not promote: the old writer goes on (a frozen server resumes; a dead one is left to
        the monitor, which restarts it) and the cluster is available again."""
        if host.frozen is host.cluster and host.cluster.executor is not None:
            host.cluster.executor.signal(signal.SIGCONT)
            host.frozen = None
        self.ext.fleet.unpark(host)  # a dead server's address is free again for its restart
        host.expected_down = False
        host.client_cuts.discard(FENCE)
        self.ext.fleet.sync_cuts()
        self.ext.set_status(cluster, "available")
        logger.error("Aurora %s: promotion failed, %s stays the writer", cluster.identifier, host.name)

    def _repoint_readers(self, cluster: AuroraCluster) -> None:
        writer = cluster.writer
        if writer is None or writer.host is None:
            return
        for member in list(cluster.members.values()):
            if member is writer or member in cluster.fenced or member.host is None:
                continue
            try:
                self.ext.fleet.follow(member.host, writer.host)
            except Exception:
                logger.exception("reader %s could not follow the new writer %s", member.identifier, writer.identifier)
        self.ext.iam.sync(cluster)  # a reader cloned again has a plain pg_hba.conf

    def _rejoin_later(self, cluster: AuroraCluster, member: Member) -> None:
        """After the profile's rejoin delay (not holding the cluster's lock meanwhile), the old writer rejoins."""
        with self.ext.lock:
            cluster.busy += 1
        try:
            if self.ext.timings.rejoin_delay and self.ext.rec.pause(self.ext.timings.rejoin_delay):
                return
            with cluster.lock:
                self.rejoin(cluster, member)
        finally:
            self.ext._idle(cluster)

    def rejoin(self, cluster: AuroraCluster, member: Member) -> None:
        """The fenced old writer comes back as a reader of the current writer: a new server cloned from it, its
        proxy re-pointed (connections hanging on the fence drop), the blackhole lifted, back in the reader DNS."""
        writer = cluster.writer
        host = member.host
        if member not in cluster.fenced or writer is None or writer.host is None or host is None:
            return
        fleet = self.ext.fleet
        fleet.fresh_server(host)
        fleet._link(host, writer.host)  # the fleet's own re-pointing of a standby's replication link
        repl.clone_into(host.cluster, writer.host.cluster, upstream=(str(host.link_address), PORT))
        repl.wait_streaming(writer.host.cluster, host.cluster, timeout=30)
        fleet.serve(host)
        host.role = "replica"
        host.expected_down = False
        host.client_cuts.discard(FENCE)
        fleet.sync_cuts()
        cluster.fenced.remove(member)
        self.ext.iam.sync(cluster)
        self.ext.set_member(cluster, member, status="available")
        self.ext.publish(cluster)
        self.ext.notify_writer(cluster)
        logger.info("Aurora %s: %s rejoined as a reader", cluster.identifier, member.identifier)

    # -- events ---------------------------------------------------------------------------------------------
    def emit(self, cluster: AuroraCluster, kind: str, *, member: Member | None = None, name: str = "") -> None:
        """An RDS event: of the cluster (kind ``cluster_*``, ``name`` in its message) or of ``member``."""
        source = (member.identifier, member.arn) if member is not None else (cluster.identifier, cluster.arn)
        try:
            self.ext.rec.events.emit(cluster.region, *source, kind, name=name)
        except Exception:
            logger.exception("emitting RDS event %s for %s failed", kind, source[0])

    # -- commits ------------------------------------------------------------------------------------------
    def sync_quorum(self, cluster: AuroraCluster) -> None:
        """Aurora acknowledges a commit once its shared storage has it, so no failover loses one. Here a commit is
        acknowledged once every reader streaming from the writer has flushed it (quorum synchronous replication,
        ANY n of the n), so whichever reader is promoted has them all. A reader cut off, down, rebooting or still
        catching up is left out (commits do not wait for it, as Aurora's do not wait for replicas)."""
        writer = cluster.writer
        host = writer.host if writer is not None else None
        if writer is None or host is None or writer in cluster.fenced or host.frozen is not None or \
                not host.cluster.running() or cluster.primary is not None:
            return  # (a secondary's writer is a replica: its commits are the global primary's)
        candidates = {m.host.cluster.name for m in cluster.members.values()
                      if m is not writer and m not in cluster.fenced and m.host is not None and
                      m.status == "available" and not m.host.net_cuts and m.host.upstream is host and
                      m.host.cluster.running()}
        applied = cluster.quorum.get(host.cluster.name)
        if applied is not None and candidates == applied:
            return
        try:
            names = candidates & repl.streaming_standbys(host.cluster) if candidates else set()
            if names != applied:
                repl.set_sync_standbys(host.cluster, sorted(names), all_of=True)
        except Exception:
            logger.warning("could not set the commit quorum of %s's writer %s", cluster.identifier,
                           writer.identifier, exc_info=True)
            return
        cluster.quorum = {host.cluster.name: names}
        if names != candidates:
            logger.debug("Aurora %s: commits wait for %s; %s still catching up", cluster.identifier, sorted(names),
                         sorted(candidates - names))

    # -- outages --------------------------------------------------------------------------------------------
    def cut(self, cluster: AuroraCluster, reason: str, *, az: str | None, failover: bool) -> None:
        """Cut the members in ``az`` (all when None) off the network: their clients and replication blackholed,
        out of the reader and custom endpoints. With ``failover``, a writer among them fails over (crash: it
        is gone with its AZ) to the reader Aurora picks among those still reachable, if there is one."""
        hit = [m for m in cluster.members.values() if m.host is not None and (az is None or m.host.az == az)]
        if not hit:
            return
        for member in hit:
            assert member.host is not None
            member.host.net_cuts.add(reason)
        self.ext.fleet.sync_cuts()
        self.sync_quorum(cluster)  # commits stop waiting for readers cut off (a cut writer's keep waiting)
        if failover and cluster.writer in hit and cluster.readers and cluster.primary is None:
            logger.warning("Aurora %s: writer %s lost with %s: failing over", cluster.identifier,
                           cluster.writer.identifier if cluster.writer else None, az)
            self.do(cluster, None, crash=True, rejoin=False)
        self.ext.publish(cluster)

    def uncut(self, cluster: AuroraCluster, reason: str) -> None:
        """Lift the cut: a writer fenced meanwhile rejoins as a reader (cloned again), readers follow the current
        writer (cloned again if their timeline diverged), all back in the endpoints."""
        hit = [m for m in cluster.members.values() if m.host is not None and reason in m.host.net_cuts]
        if not hit:
            return
        for member in hit:
            assert member.host is not None
            member.host.net_cuts.discard(reason)
        self.ext.fleet.sync_cuts()
        if cluster.primary is not None:  # a secondary: every member streams from the global primary again
            self.ext.globals.refollow(cluster)
            self.ext.publish(cluster)
            return
        writer = cluster.writer
        # A writer back from the cut: every reader's replication went through the cut; else only the cut ones'.
        followers = [m for m in cluster.members.values() if m is not writer] if writer in hit else hit
        for member in followers:
            host = member.host
            if host is None or host.net_cuts or writer is None or writer.host is None or writer.host.net_cuts:
                continue  # still cut for another reason: recovered when that one ends
            try:
                if member in cluster.fenced:
                    self.rejoin(cluster, member)
                elif member is not writer:
                    self.ext.fleet.follow(host, writer.host)
            except Exception:
                logger.exception("%s of %s could not recover after the outage", member.identifier,
                                 cluster.identifier)
        self.ext.iam.sync(cluster)
        self.ext.publish(cluster)
        if writer in hit:
            self.ext.globals.primary_writer_changed(cluster)  # its secondaries' links went through the cut

    # -- the monitor -----------------------------------------------------------------------------------------
    def watch(self) -> None:
        down_since: dict[int, float] = {}
        for _ in itertools.count():
            if self.ext.stopping.wait(self.ext.timings.monitor_interval):
                return
            with self.ext.lock:
                clusters = list(self.ext.clusters.values())
            for cluster in clusters:
                try:
                    self._check(cluster, down_since)
                    # Not while work holds the cluster (it sets the quorum itself), but also while it is only
                    # busy waiting (a rejoin's delay): a reader dying meanwhile must not hold commits up.
                    if cluster.lock.acquire(blocking=False):
                        try:
                            self.sync_quorum(cluster)
                        finally:
                            cluster.lock.release()
                except Exception:
                    logger.exception("monitoring %s failed", cluster)

    def _check(self, cluster: AuroraCluster, down_since: dict[int, float]) -> None:
        if self.ext.moto_cluster(cluster) is None and not cluster.busy:
            logger.info("moto forgot Aurora cluster %s/%s: removing it", cluster.region, cluster.identifier)
            self.ext.drop(cluster)
            return
        if cluster.status != "available" or cluster.busy:
            return
        for member in list(cluster.members.values()):
            host = member.host
            if host is None or member.status != "available" or host.expected_down or host.net_cuts or \
                    host.cluster.running():
                down_since.pop(id(member), None)
                continue
            if member is cluster.writer and cluster.primary is None and any(
                    m.host is not None and m.host.cluster.running() for m in cluster.readers):
                logger.warning("writer %s of %s died: failing over", member.identifier, cluster.identifier)
                self.ext.run(cluster, lambda: self.do(cluster, None, crash=True, rejoin=True),
                         what="failover", wait=False)
                return
            first = down_since.setdefault(id(member), time.monotonic())
            if time.monotonic() - first >= self.ext.timings.restart_delay:
                down_since.pop(id(member), None)
                logger.warning("%s of %s died: restarting it", member.identifier, cluster.identifier)
                self.ext.run(cluster, lambda m=member: self.restart(cluster, m), what="restart", wait=False)  # type: ignore[misc]

    def restart(self, cluster: AuroraCluster, member: Member) -> None:
        if member.host is None:
            return
        self.ext.set_member(cluster, member, status="rebooting")
        self.sync_quorum(cluster)
        self.emit(cluster, "shutdown", member=member)
        try:
            self.ext.fleet.restart(member.host)
        finally:
            self.ext.set_member(cluster, member, status="available")
        self.emit(cluster, "restarted", member=member)
        self.ext.publish(cluster)
