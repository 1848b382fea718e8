"""Aurora faults on emulated clusters (real PostgreSQL behind them): writer failover (the old writer fenced as a
blackhole, held so if asked), kill the writer (automatic failover), real reader lag; and the FIS actions
aws:rds:failover-db-cluster and aws:rds:reboot-db-instances for cluster members."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from faults.base import Composite, Fault, FaultError
from faults.database import DEFAULT_RECOVERY_TIMEOUT, RdsFault, target_ref
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.rds.aurora import AuroraClusters
    from harness.rds.reconciler import RdsReconciler


class AuroraFault(RdsFault):
    """A fault acting on the Aurora clusters of the running (or given) RDS reconciler."""

    @property
    def ext(self) -> AuroraClusters:
        from harness.rds.aurora import aurora

        return self._call(aurora, self.rec)


class ClusterFault(AuroraFault):
    """A fault on one Aurora cluster."""

    def __init__(self, cluster: Any, *, region: str | None = None, reconciler: RdsReconciler | None = None,
                 name: str | None = None) -> None:
        super().__init__(reconciler=reconciler, name=name)
        self.identifier, self.region = target_ref(cluster, region, "an Aurora cluster")

    def target_label(self) -> str:
        return f"{self.region}/{self.identifier}" if self.region else self.identifier

    def describe(self) -> dict[str, Any]:
        return {"cluster": self.identifier, "region": self.region}


class WriterFailover(ClusterFault):
    """Fail the cluster over (to ``target``, or the reader Aurora would pick). The old writer is fenced: a
    blackhole, connections time out. ``hold_fence``: it stays fenced until heal (else it rejoins as a reader at
    once, after the profile's delay). Heal waits until every member is available. ``took``: fence to DNS flip."""

    kind = "aurora_failover"

    def __init__(self, cluster: Any, target: str | None = None, *, hold_fence: bool = False,
                 recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT, **kw: Any) -> None:
        super().__init__(cluster, **kw)
        self.target = target
        self.hold_fence = hold_fence
        self.recovery_timeout = recovery_timeout
        self.took: float | None = None
        self.old_writer: str | None = None

    def _inject(self) -> None:
        ext = self.ext
        cluster = self._call(ext.cluster, self.identifier, self.region)
        self.old_writer = cluster.writer.identifier if cluster.writer is not None else None
        self.took = self._call(ext.failover, self.identifier, self.target, region=self.region,
                               rejoin=not self.hold_fence)

    def _heal(self) -> None:
        ext = self.ext
        if self.hold_fence:
            self._call(ext.rejoin_old_writers, self.identifier, self.region)
        self._call(ext.wait_available, self.identifier, self.region, self.recovery_timeout)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "target": self.target, "old_writer": self.old_writer, "took": self.took,
                "hold_fence": self.hold_fence}


class KillWriter(ClusterFault):
    """SIGKILL the writer's PostgreSQL. Aurora reacts: a reader is promoted (the old writer rejoins as a reader),
    or a lone writer is restarted. Heal waits until the cluster is whole again."""

    kind = "aurora_kill_writer"

    def __init__(self, cluster: Any, *, recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT, **kw: Any) -> None:
        super().__init__(cluster, **kw)
        self.recovery_timeout = recovery_timeout
        self.killed: str | None = None

    def _inject(self) -> None:
        self.killed = self._call(self.ext.kill_writer, self.identifier, self.region).identifier

    def _heal(self) -> None:
        from harness.wait import wait_until

        ext = self.ext
        cluster = self._call(ext.cluster, self.identifier, self.region)

        def recovered() -> bool:
            writer = cluster.writer
            return writer is not None and writer.host is not None and writer.host.cluster.running() and \
                (writer.identifier != self.killed or not cluster.busy)

        wait_until(recovered, self.recovery_timeout, interval=0.02, what=f"{self.identifier} to recover its writer")
        self._call(ext.wait_available, self.identifier, self.region, self.recovery_timeout)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "killed": self.killed}


class ReaderLag(ClusterFault):
    """Real lag on one reader: each commit is applied ``seconds`` after the writer made it
    (recovery_min_apply_delay); reads there are that stale. Heal removes the delay."""

    kind = "aurora_reader_lag"

    def __init__(self, cluster: Any, reader: str, seconds: float, **kw: Any) -> None:
        super().__init__(cluster, **kw)
        ok = isinstance(seconds, int | float) and not isinstance(seconds, bool) and math.isfinite(seconds)
        if not ok or seconds <= 0:
            raise FaultError(f"{self.kind}: seconds must be a number > 0, got {seconds!r}", fault=self)
        if not isinstance(reader, str) or not reader:
            raise FaultError(f"{self.kind}: reader must be the identifier of a reader instance, got {reader!r}",
                             fault=self)
        self.reader = reader
        self.seconds = float(seconds)

    def _inject(self) -> None:
        self._call(self.ext.set_reader_lag, self.identifier, self.reader, self.seconds, self.region)

    def _heal(self) -> None:
        self._call(self.ext.set_reader_lag, self.identifier, self.reader, None, self.region)

    def target_label(self) -> str:
        return f"{super().target_label()}/{self.reader}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reader": self.reader, "seconds": self.seconds}


def writer_failover(cluster: Any, target: str | None = None, **kw: Any) -> WriterFailover:
    return WriterFailover(cluster, target, **kw)


def kill_writer(cluster: Any, **kw: Any) -> KillWriter:
    return KillWriter(cluster, **kw)


def reader_lag(cluster: Any, reader: str, seconds: float, **kw: Any) -> ReaderLag:
    return ReaderLag(cluster, reader, seconds, **kw)


class GlobalFailover(AuroraFault):
    """``failover_global_cluster`` through the RDS API of the target's region, as an operator or automation calls
    it when the primary region is lost: the secondary ``target`` (its ARN) becomes the primary at once
    (``allow_data_loss``; what had not reached it is lost), or after catching up (``switchover``: nothing lost).
    Heal waits until every cluster of the global database is available (an old primary whose region is out is
    rebuilt as a secondary when the region comes back)."""

    kind = "aurora_global_failover"

    def __init__(self, global_id: str, target: str, *, switchover: bool = False,
                 reconciler: RdsReconciler | None = None, recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT,
                 name: str | None = None) -> None:
        super().__init__(reconciler=reconciler, name=name)
        parts = target.split(":") if isinstance(target, str) else []
        if len(parts) < 7 or parts[2] != "rds" or parts[5] != "cluster":
            raise FaultError(f"{self.kind}: target must be the ARN of a secondary DB cluster "
                             f"(arn:aws:rds:REGION:ACCOUNT:cluster:NAME), got {target!r}", fault=self)
        self.global_id, self.target, self.region = global_id, target, parts[3]
        self.switchover = switchover
        self.recovery_timeout = recovery_timeout

    def _inject(self) -> None:
        client = self.ext.rec.stack.aws.client("rds", region=self.region)
        if self.switchover:
            client.switchover_global_cluster(GlobalClusterIdentifier=self.global_id,
                                             TargetDbClusterIdentifier=self.target)
        else:
            client.failover_global_cluster(GlobalClusterIdentifier=self.global_id,
                                           TargetDbClusterIdentifier=self.target, AllowDataLoss=True)

    def _heal(self) -> None:
        ext = self.ext
        for cluster in ext.globals.members(self.global_id):
            ext.wait_available(cluster.identifier, cluster.region, self.recovery_timeout)

    def target_label(self) -> str:
        return self.target.rsplit(":", 1)[-1]

    def describe(self) -> dict[str, Any]:
        return {"global_cluster": self.global_id, "target": self.target, "switchover": self.switchover}


# -- region outage part: every Aurora cluster of the region unreachable ------------------------------------
class RegionClusters(AuroraFault):
    """Every member of every Aurora cluster in ``region`` cut off the network (clients and replication
    blackholed; no failover: the whole region is gone). Heal brings them back and waits until the clusters are
    whole (readers streaming again)."""

    kind = "aurora_region_outage"

    def __init__(self, region: str, *, reconciler: RdsReconciler | None = None,
                 recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT, name: str | None = None) -> None:
        super().__init__(reconciler=reconciler, name=name)
        self.region = region
        self.recovery_timeout = recovery_timeout
        self._reason: str | None = None

    def _inject(self) -> None:
        self._reason = self.ext.region_down(self.region)

    def _heal(self) -> None:
        if self._reason is None:
            return
        ext, reason, self._reason = self.ext, self._reason, None
        ext.region_up(self.region, reason)
        for cluster in ext.in_region(self.region):
            ext.wait_available(cluster.identifier, self.region, self.recovery_timeout)

    def target_label(self) -> str:
        return self.region

    def describe(self) -> dict[str, Any]:
        return {"region": self.region}


def _region_part(region: str, mode: str, context: dict[str, Any]) -> list[Fault]:
    from harness.rds.reconciler import current_reconciler

    rec = context.get("reconciler")
    if rec is None:
        try:
            rec = current_reconciler()
        except HarnessError:
            return []
    from harness.rds.aurora import aurora

    try:
        clusters = aurora(rec).in_region(region)
    except HarnessError:
        return []
    return [RegionClusters(region, reconciler=rec)] if clusters else []


def _register_outage_parts() -> None:
    from faults.outage import register_outage_part

    register_outage_part("region", "aurora", _region_part)


_register_outage_parts()


# -- FIS actions ---------------------------------------------------------------------------------------------
class ApiFailover(ClusterFault):
    """``failover_db_cluster`` through the RDS API, as FIS aws:rds:failover-db-cluster calls it; heal waits until
    the cluster is whole again (the old writer rejoined)."""

    kind = "aws:rds:failover-db-cluster"

    def _inject(self) -> None:
        client = self.ext.rec.stack.aws.client("rds", region=self.region)
        client.failover_db_cluster(DBClusterIdentifier=self.identifier)

    def _heal(self) -> None:
        self._call(self.ext.wait_available, self.identifier, self.region, DEFAULT_RECOVERY_TIMEOUT)


class ApiMemberReboot(AuroraFault):
    """``reboot_db_instance`` of an Aurora cluster member through the RDS API; heal waits until it is available."""

    kind = "db_reboot"

    def __init__(self, identifier: str, region: str) -> None:
        super().__init__()
        self.identifier, self.region = identifier, region

    def _inject(self) -> None:
        self.rec.stack.aws.client("rds", region=self.region).reboot_db_instance(DBInstanceIdentifier=self.identifier)

    def _heal(self) -> None:
        from harness.wait import wait_until

        found = self.ext.member_of(self.region, self.identifier)
        if found is not None:
            wait_until(lambda: found[1].status == "available", DEFAULT_RECOVERY_TIMEOUT, interval=0.02,
                       what=f"{self.identifier} to be available after its reboot")

    def target_label(self) -> str:
        return f"{self.region}/{self.identifier}"

    def describe(self) -> dict[str, Any]:
        return {"instance": self.identifier, "region": self.region}


def _arn(arn: str, kind: str) -> tuple[str, str]:
    fields = arn.split(":")
    if len(fields) < 7 or fields[2] != "rds" or fields[5] != kind:
        raise FaultError(f"not an RDS {kind} ARN (arn:aws:rds:REGION:ACCOUNT:{kind}:ID): {arn!r}")
    return fields[6], fields[3]


def _group(parts: list[Fault], name: str) -> Fault:
    if not parts:
        raise FaultError(f"{name} needs at least one target")
    return parts[0] if len(parts) == 1 else Composite(parts, name=name)


def _fis_failover(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> Fault:
    parts: list[Fault] = []
    for arn in targets.get("Clusters", []):
        identifier, region = _arn(arn, "cluster")
        parts.append(ApiFailover(identifier, region=region))
    return _group(parts, "aws:rds:failover-db-cluster")


def _aurora_member(arn: str) -> tuple[str, str] | None:
    from harness.rds.aurora import aurora
    from harness.rds.reconciler import current_reconciler

    identifier, region = _arn(arn, "db")
    try:
        ext = aurora(current_reconciler())
    except HarnessError:
        return None
    return (identifier, region) if ext.member_of(region, identifier) is not None else None


def _fis_reboot(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> Fault:
    """aws:rds:reboot-db-instances: Aurora members are rebooted here; DB instances by the DB instance handler."""
    from faults import database

    members, instances = [], []
    for arn in targets.get("DBInstances", []):
        member = _aurora_member(arn)
        if member is not None:
            members.append(member)
        else:
            instances.append(arn)
    if members and params.get("forceFailover", "false") == "true":
        raise FaultError("aws:rds:reboot-db-instances forceFailover does not apply to Aurora instances "
                         f"({', '.join(m for m, _ in members)}): use aws:rds:failover-db-cluster on their cluster")
    parts: list[Fault] = [ApiMemberReboot(ident, region) for ident, region in members]
    if instances:
        parts.append(database._fis_reboot(params, {**targets, "DBInstances": instances}, ctx))
    return _group(parts, "reboot-db-instances")


def register_fis_actions(registry: Any = None) -> None:
    """Handle aws:rds:failover-db-cluster, and aws:rds:reboot-db-instances for Aurora members as well as DB
    instances, in an FIS runner registry (default: the global one)."""
    from faults.fis import default_registry

    reg = registry or default_registry
    reg.register("aws:rds:failover-db-cluster", _fis_failover, replace=True)
    reg.register("aws:rds:reboot-db-instances", _fis_reboot, replace=True)
