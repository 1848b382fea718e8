"""The data of emulated Aurora clusters: a cluster, its members (DB instances) and custom endpoints, and the
timings of each time profile."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.rds.fleet import Host

ENGINE = "aurora-postgresql"
DNS_TTL = 5  # Aurora endpoints, both profiles
# Parameter group settings applied to the real servers; others are recorded by the API only.
APPLIED_PARAMETERS = ("max_connections", "statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout",
                      "work_mem", "log_min_duration_statement")


@dataclass(frozen=True)
class AuroraTimings:
    """``failover_delay``: from fencing the writer to promoting a reader (AWS: most of a 30-60 s failover).
    ``rejoin_delay``: from the DNS flip until the old writer starts rebuilding as a reader. ``restart_delay``: a
    crashed writer without readers (or a crashed reader) is restarted after this."""

    failover_delay: float
    rejoin_delay: float
    restart_delay: float
    monitor_interval: float


TIMINGS = {
    "fast": AuroraTimings(failover_delay=0.0, rejoin_delay=0.0, restart_delay=0.2, monitor_interval=0.05),
    "aws": AuroraTimings(failover_delay=25.0, rejoin_delay=20.0, restart_delay=30.0, monitor_interval=1.0),
}


@dataclass(eq=False)
class Member:
    """A DB instance of a cluster. ``host`` is None while it is being created."""

    identifier: str
    arn: str
    dns_name: str
    az: str
    promotion_tier: int = 1
    host: Host | None = None
    status: str = "creating"

    def __repr__(self) -> str:
        return f"<Member {self.identifier} {self.status} {self.host.address if self.host else '-'}>"


@dataclass(eq=False)
class CustomEndpoint:
    """``create_db_cluster_endpoint``: a name rotating over chosen members (type READER or ANY)."""

    identifier: str
    arn: str
    dns_name: str
    endpoint_type: str
    static: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    status: str = "available"


@dataclass(eq=False)
class AuroraCluster:
    region: str
    identifier: str
    arn: str
    resource_id: str
    writer_dns: str
    reader_dns: str
    port: int
    user: str
    password: str
    db_name: str
    settings: dict[str, str] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    writer: Member | None = None
    fenced: list[Member] = field(default_factory=list)  # old writers, blackholed until they rejoin as readers
    endpoints: dict[str, CustomEndpoint] = field(default_factory=dict)
    status: str = "available"
    failovers: int = 0
    busy: int = 0
    iam_applied: bool = False  # the members' pg_hba.conf carries the IAM auth line
    quorum: dict[str, set[str]] = field(default_factory=dict)  # writer server -> readers its commits wait for
    global_id: str | None = None  # member of this Aurora global database
    primary: AuroraCluster | None = None  # a secondary cluster: the global primary it replicates from
    rebuild: set[str] = field(default_factory=set)  # members to clone again from the global primary
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def readers(self) -> list[Member]:
        """Members serving reads now (not the writer, not fenced, not being created)."""
        return [m for m in self.members.values() if m is not self.writer and m not in self.fenced and
                m.host is not None and m.status == "available" and not m.host.net_cuts]

    def member(self, identifier: str) -> Member:
        found = self.members.get(identifier.lower())
        if found is None:
            raise HarnessError(f"{identifier!r} is not a DB instance of cluster {self.identifier} (members: "
                               f"{', '.join(sorted(self.members)) or 'none'})", obj=self)
        return found

    def dsn(self, *, host: str | None = None, dbname: str | None = None, **extra: Any) -> str:
        """libpq connection string to the cluster (writer) endpoint (or ``host``) with the master login."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=host or self.writer_dns, port=self.port, user=self.user, password=self.password,
                             dbname=dbname or self.db_name, **extra)

    def __repr__(self) -> str:
        writer = self.writer.identifier if self.writer else None
        return f"<AuroraCluster {self.region}/{self.identifier} {self.status} writer={writer}>"
