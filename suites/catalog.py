"""The drills dbdrill ships: name -> module and what it proves. ``dbdrill drill NAME`` and
``pytest --pyargs suites.NAME`` run the same module."""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from harness.errors import ConfigError


@dataclass(frozen=True)
class DrillInfo:
    name: str
    summary: str
    kind: str

    @property
    def module(self) -> str:
        return f"suites.{self.name}"


DRILLS: dict[str, DrillInfo] = {d.name: d for d in (
    DrillInfo("replica_promotion", "RDS read replica promoted, the app's DNS name flipped to it: writes resume, "
              "no acknowledged write lost before the promotion point", "read-replica"),
    DrillInfo("multi_az_failover", "RDS Multi-AZ failover (reboot with failover): no acknowledged write lost, "
              "writer never stale, RTO within limit", "rds-multi-az-failover"),
    DrillInfo("aurora_failover", "Aurora writer failover: the cluster endpoint follows the new writer, the old "
              "writer is fenced, readers keep serving", "aurora-failover"),
    DrillInfo("aurora_az_outage", "Aurora loses its writer's Availability Zone: it fails over to another AZ by "
              "itself, no acknowledged write lost, the lost writer acknowledges nothing", "aurora-failover"),
    DrillInfo("aurora_global_failover", "Aurora global database, primary region lost: the secondary is promoted "
              "(AllowDataLoss), the global endpoint follows, loss within the RPO, the old primary acknowledges "
              "nothing", "aurora-global"),
    DrillInfo("cross_region_failover", "Region outage -> RDS event -> automation promotes the replica in another "
              "region and UPSERTs Route53: RTO and lost writes measured", "region-outage"),
    DrillInfo("rds_proxy_storm", "Lambda-style connection storm: direct connections exhaust max_connections, "
              "the emulated RDS Proxy serves them all", "rds-proxy-storm"),
    DrillInfo("ttl_expiry", "DynamoDB TTL: expired-but-unswept items never served by the app, deletions "
              "reach the stream handler with the Service identity", "dynamodb-ttl"),
    DrillInfo("dynamodb_throttling", "DynamoDB throttling (capacity + injected throttles): the app's retries "
              "lose no acknowledged write and keep availability", "dynamodb-throttling"),
    DrillInfo("region_outage", "DynamoDB global table, one region down: the app fails over to another region, "
              "replication catches up after heal, no acknowledged write lost", "dynamodb-global-table"),
    DrillInfo("network_faults", "Latency then a partition in front of any TCP endpoint: the client sees the "
              "latency, fails fast during the partition, recovers after heal", "network"),
)}


def resolve(names: list[str] | tuple[str, ...]) -> list[DrillInfo]:
    """Drills by name (``all`` = every drill), refusing unknown names before anything starts."""
    if not names or "all" in names:
        return list(DRILLS.values())
    out = []
    for name in names:
        key = name.replace("-", "_")
        if key not in DRILLS:
            close = difflib.get_close_matches(key, DRILLS, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown drill {name!r}.{hint} Known drills: {', '.join(DRILLS)} (or all).", obj=name)
        out.append(DRILLS[key])
    return out
