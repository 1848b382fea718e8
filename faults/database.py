"""Database faults on emulated RDS DB instances (real PostgreSQL behind them): crash the primary, fence it at
its proxy, lose an Availability Zone, real replica lag, paused replication, and forced Multi-AZ failover."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from faults.base import Fault, FaultError
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.rds.reconciler import RdsReconciler

DEFAULT_RECOVERY_TIMEOUT = 120.0


def target_ref(target: Any, region: str | None, what: str = "a DB instance") -> tuple[str, str | None]:
    """An identifier, or anything with ``identifier`` (and ``region``): a PostgresInstance, an Instance, an
    AuroraHandle, an AuroraCluster. ``what`` names the expected kind in the error."""
    if isinstance(target, str) and target:
        return target, region
    ident = getattr(target, "identifier", None)
    if isinstance(ident, str) and ident:
        return ident, region or getattr(target, "region", None)
    raise FaultError(f"expected {what} identifier (or an object with .identifier), got {target!r}")


class RdsFault(Fault):
    """A fault acting through the running (or given) RDS reconciler; harness errors become FaultErrors."""

    def __init__(self, *, reconciler: RdsReconciler | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self._reconciler = reconciler

    @property
    def rec(self) -> RdsReconciler:
        if self._reconciler is not None:
            return self._reconciler
        from harness.rds.reconciler import current_reconciler

        try:
            return current_reconciler()
        except HarnessError as exc:
            raise FaultError(str(exc), fault=self) from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HarnessError as exc:
            raise FaultError(f"{self.kind}: {exc}", fault=self) from exc


class InstanceFault(RdsFault):
    """A fault on one DB instance."""

    def __init__(self, instance: Any, *, region: str | None = None, reconciler: RdsReconciler | None = None,
                 name: str | None = None) -> None:
        super().__init__(reconciler=reconciler, name=name)
        self.identifier, self.region = target_ref(instance, region)

    def target_label(self) -> str:
        return f"{self.region}/{self.identifier}" if self.region else self.identifier

    def describe(self) -> dict[str, Any]:
        return {"instance": self.identifier, "region": self.region}


class KillPrimary(InstanceFault):
    """SIGKILL the instance's primary PostgreSQL (a crash). RDS reacts: Multi-AZ fails over, single-AZ is
    restarted with crash recovery. Heal waits until the instance is available again."""

    kind = "db_kill_primary"

    def __init__(self, instance: Any, *, recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT, **kw: Any) -> None:
        super().__init__(instance, **kw)
        self.recovery_timeout = recovery_timeout
        self.killed: str | None = None

    def _inject(self) -> None:
        self.killed = self._call(self.rec.kill_primary, self.identifier, self.region).name

    def _heal(self) -> None:
        rec = self.rec
        inst = self._call(rec.instance, self.identifier, self.region)
        from harness.wait import wait_until

        wait_until(lambda: inst.primary.name != self.killed or inst.primary.cluster.running(), self.recovery_timeout,
                   interval=0.02, what=f"{self.identifier} to recover from the crash")
        self._call(rec.wait_available, self.identifier, self.region, self.recovery_timeout)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "killed_host": self.killed}


class Fence(InstanceFault):
    """Blackhole the primary at its proxy: connections hang (no reset), as clients of a fenced host see.
    No failover is started: the host is alive, only unreachable. Heal lifts the blackhole."""

    kind = "db_fence"

    def __init__(self, instance: Any, **kw: Any) -> None:
        super().__init__(instance, **kw)
        self._token: int | None = None

    def _inject(self) -> None:
        self._token = self._call(self.rec.fence, self.identifier, self.region)

    def _heal(self) -> None:
        if self._token is not None:
            self.rec.unfence(self._token)
            self._token = None


class ForceFailover(InstanceFault):
    """A Multi-AZ failover now (what reboot_db_instance(ForceFailover=True) and FIS aws:rds:reboot-db-instances
    do): old primary fenced, standby promoted, DNS flipped. ``took`` is fence-to-DNS-flip seconds. Heal waits
    until the old primary has been rebuilt as the new standby."""

    kind = "db_failover"

    def __init__(self, instance: Any, *, recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT, **kw: Any) -> None:
        super().__init__(instance, **kw)
        self.recovery_timeout = recovery_timeout
        self.took: float | None = None

    def _inject(self) -> None:
        self.took = self._call(self.rec.force_failover, self.identifier, self.region)

    def _heal(self) -> None:
        self._call(self.rec.wait_available, self.identifier, self.region, self.recovery_timeout)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "took": self.took}


class ReplicaLag(InstanceFault):
    """Real lag on a read replica: each commit is applied ``seconds`` after the source made it
    (recovery_min_apply_delay). Reads on the replica are that stale. Heal removes the delay."""

    kind = "db_replica_lag"

    def __init__(self, instance: Any, seconds: float, **kw: Any) -> None:
        super().__init__(instance, **kw)
        ok = isinstance(seconds, int | float) and not isinstance(seconds, bool) and math.isfinite(seconds)
        if not ok or seconds <= 0:
            raise FaultError(f"{self.kind}: seconds must be a number > 0, got {seconds!r}", fault=self)
        self.seconds = float(seconds)

    def _inject(self) -> None:
        self._call(self.rec.set_replica_lag, self.identifier, self.seconds, self.region)

    def _heal(self) -> None:
        self._call(self.rec.set_replica_lag, self.identifier, None, self.region)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seconds": self.seconds}


class PauseReplication(InstanceFault):
    """Cut a read replica's replication link (no WAL arrives; it serves older and older data). Heal
    reconnects it and it catches up."""

    kind = "db_pause_replication"

    def _inject(self) -> None:
        self._call(self.rec.pause_replication, self.identifier, True, self.region)

    def _heal(self) -> None:
        self._call(self.rec.pause_replication, self.identifier, False, self.region)


class AzOutage(RdsFault):
    """Lose an Availability Zone: every DB host in ``az`` is cut off the network (blackholed both ways),
    Multi-AZ instances whose primary is there fail over, those whose standby is there go on without it. Heal
    brings the AZ back; lost hosts are rebuilt as standbys (``wait_recovered``: heal waits for that)."""

    kind = "db_az_outage"

    def __init__(self, region: str, az: str, *, wait_recovered: bool = True,
                 recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT, reconciler: RdsReconciler | None = None,
                 name: str | None = None) -> None:
        super().__init__(reconciler=reconciler, name=name)
        if not isinstance(region, str) or not isinstance(az, str) or not az.startswith(region) or \
                len(az) != len(region) + 1 or not az[-1].isalpha():
            raise FaultError(f"{self.kind}: az must be an Availability Zone of region {region!r} (e.g. "
                             f"{region}a), got {az!r}", fault=self)
        self.region, self.az = region, az
        self.wait_recovered = wait_recovered
        self.recovery_timeout = recovery_timeout
        self._token: int | None = None

    def _inject(self) -> None:
        self._token = self._call(self.rec.az_outage, self.region, self.az)

    def _heal(self) -> None:
        if self._token is None:
            return
        rec = self.rec
        rec.restore_az(self._token)
        self._token = None
        if self.wait_recovered:
            from harness.wait import wait_until

            def recovered() -> bool:
                with rec.lock:
                    instances = [i for (r, _), i in rec.instances.items() if r == self.region]
                return all(not i.lost_hosts and not rec.busy(i) for i in instances)

            wait_until(recovered, self.recovery_timeout, interval=0.05, what=f"hosts of {self.az} to be rebuilt")

    def target_label(self) -> str:
        return self.az

    def describe(self) -> dict[str, Any]:
        return {"region": self.region, "az": self.az}


def kill_primary(instance: Any, **kw: Any) -> KillPrimary:
    return KillPrimary(instance, **kw)


def fence(instance: Any, **kw: Any) -> Fence:
    return Fence(instance, **kw)


def force_failover(instance: Any, **kw: Any) -> ForceFailover:
    return ForceFailover(instance, **kw)


def replica_lag(instance: Any, seconds: float, **kw: Any) -> ReplicaLag:
    return ReplicaLag(instance, seconds, **kw)


def pause_replication(instance: Any, **kw: Any) -> PauseReplication:
    return PauseReplication(instance, **kw)


def az_outage(region: str, az: str, **kw: Any) -> AzOutage:
    return AzOutage(region, az, **kw)


def failover_now(instance: Any, *, region: str | None = None, reconciler: RdsReconciler | None = None) -> float:
    """Fail a Multi-AZ instance over at once (not a fault window); seconds from fence to DNS flip."""
    fault = ForceFailover(instance, region=region, reconciler=reconciler)
    return float(fault._call(fault.rec.force_failover, fault.identifier, fault.region))


# -- outage parts: what a region / AZ outage does to the DB instances there ---------------------------------
def _running() -> RdsReconciler | None:
    from harness.rds.reconciler import current_reconciler

    try:
        return current_reconciler()
    except HarnessError:
        return None


def _region_part(region: str, mode: str, context: dict[str, Any]) -> list[Fault]:
    """Every DB instance of the region unreachable (no failover: the whole region is gone) and the
    replication of replicas elsewhere that stream from it cut."""
    rec = context.get("reconciler") or _running()
    if rec is None:
        return []
    with rec.lock:
        instances = list(rec.instances.values())
    parts: list[Fault] = [Fence(i.identifier, region=region, reconciler=rec) for i in instances if i.region == region]
    parts += [PauseReplication(i.identifier, region=i.region, reconciler=rec) for i in instances
              if i.region != region and i.source is not None and i.source.region == region]
    return parts


def _az_part(az: str, mode: str, context: dict[str, Any]) -> list[Fault]:
    rec = context.get("reconciler") or _running()
    if rec is None:
        return []
    return [AzOutage(az[:-1], az, reconciler=rec)]


def _register_outage_parts() -> None:
    from faults.outage import register_outage_part

    register_outage_part("region", "rds", _region_part)
    register_outage_part("az", "rds", _az_part)


_register_outage_parts()


# -- FIS actions ---------------------------------------------------------------------------------------------
class Reboot(InstanceFault):
    """``reboot_db_instance`` through the RDS API (with ``ForceFailover`` a Multi-AZ failover); heal waits until
    the instance is available again."""

    kind = "db_reboot"

    def __init__(self, instance: Any, *, force_failover: bool = False, **kw: Any) -> None:
        super().__init__(instance, **kw)
        self.force_failover = force_failover

    def _inject(self) -> None:
        rec = self.rec
        client = rec.stack.aws.client("rds", region=self.region)
        client.reboot_db_instance(DBInstanceIdentifier=self.identifier, ForceFailover=self.force_failover)

    def _heal(self) -> None:
        self._call(self.rec.wait_available, self.identifier, self.region, DEFAULT_RECOVERY_TIMEOUT)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "force_failover": self.force_failover}


def _db_arn(arn: str) -> tuple[str, str]:
    fields = arn.split(":")
    if len(fields) < 7 or fields[2] != "rds" or fields[5] != "db":
        raise FaultError(f"not a DB instance ARN (arn:aws:rds:REGION:ACCOUNT:db:ID): {arn!r}")
    return fields[6], fields[3]


def _fis_reboot(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> Fault:
    from faults.base import Composite

    force = params.get("forceFailover", "false") == "true"
    parts: list[Fault] = []
    for arn in targets.get("DBInstances", []):
        identifier, region = _db_arn(arn)
        parts.append(Reboot(identifier, region=region, force_failover=force))
    if not parts:
        raise FaultError("aws:rds:reboot-db-instances needs at least one DB instance target")
    return parts[0] if len(parts) == 1 else Composite(parts, name="reboot-db-instances")


def register_fis_actions(registry: Any = None) -> None:
    """Handle aws:rds:reboot-db-instances (forceFailover) in an FIS runner registry (default: the global one)."""
    from faults.fis import default_registry

    (registry or default_registry).register("aws:rds:reboot-db-instances", _fis_reboot, replace=True)
