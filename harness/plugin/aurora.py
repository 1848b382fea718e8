"""dbdrill pytest fixtures for Aurora PostgreSQL: ``aurora_cluster`` creates a cluster (writer + readers) through
the RDS API on real PostgreSQL and returns its endpoints and login; removed after the test with the other ``rds``
state. Services start only for tests that use it."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint
    from harness.dns.resolver import ResolverHook
    from harness.rds.aurora import AuroraCluster, AuroraClusters
    from harness.rds.reconciler import RdsReconciler

DEFAULT_USER = "master"
DEFAULT_PASSWORD = "dbdrill-pass-1"
DEFAULT_DB = "app"
_ids = itertools.count(1)


@dataclass
class AuroraHandle:
    """A cluster made by ``aurora_cluster``: its endpoints (DNS names dbdrill serves), members and login."""

    identifier: str
    region: str
    writer_endpoint: str
    reader_endpoint: str
    port: int
    user: str
    password: str
    dbname: str
    arn: str
    instances: list[str]
    reconciler: RdsReconciler
    client: Any
    parameter_group: str | None = field(default=None)

    @property
    def ext(self) -> AuroraClusters:
        from harness.rds.aurora import aurora

        return aurora(self.reconciler)

    @property
    def cluster(self) -> AuroraCluster:
        """The live cluster: writer, readers, fenced old writers, hosts."""
        return self.ext.cluster(self.identifier, self.region)

    def endpoint(self, which: str = "writer") -> str:
        """``writer``, ``reader``, a member's identifier, or any DNS name (a custom endpoint): the DNS name."""
        if which == "writer":
            return self.writer_endpoint
        if which == "reader":
            return self.reader_endpoint
        return which if "." in which else self.cluster.member(which).dns_name

    def dsn(self, which: str = "writer", **extra: Any) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.endpoint(which), port=self.port, user=self.user, password=self.password,
                             dbname=self.dbname, **extra)

    def connect(self, which: str = "writer", **kwargs: Any) -> Any:
        """psycopg connection to an endpoint by name (resolved through dbdrill's DNS), autocommit, 5 s timeout."""
        import psycopg

        options: dict[str, Any] = {"autocommit": True, "connect_timeout": 5, **kwargs}
        return psycopg.connect(self.dsn(which), **options)

    def describe(self) -> dict[str, Any]:
        desc: dict[str, Any] = self.client.describe_db_clusters(DBClusterIdentifier=self.identifier)["DBClusters"][0]
        return desc

    def writer(self) -> str:
        """The writer's identifier, as DescribeDBClusters reports it."""
        return str(next(m["DBInstanceIdentifier"] for m in self.describe()["DBClusterMembers"] if m["IsClusterWriter"]))

    def add_reader(self, identifier: str | None = None, *, tier: int = 1, timeout: float = 120.0) -> str:
        identifier = identifier or f"{self.identifier}-{len(self.instances) + 1}"
        _create_member(self.client, self.identifier, identifier, tier, None, timeout)
        self.instances.append(identifier)
        return identifier

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Until every reader has replayed what the writer had written (before a crash, so nothing is lost)."""
        self.ext.wait_replicated(self.identifier, self.region, timeout)

    def wait_available(self, timeout: float = 60.0) -> AuroraCluster:
        """Until the cluster and every member are available (an old writer rejoined after a failover)."""
        return self.ext.wait_available(self.identifier, self.region, timeout)


def _create_member(client: Any, cluster: str, identifier: str, tier: int, az: str | None, timeout: float) -> None:
    from harness.wait import wait_until

    args: dict[str, Any] = {"DBInstanceIdentifier": identifier, "DBClusterIdentifier": cluster,
                            "Engine": "aurora-postgresql", "DBInstanceClass": "db.r6g.large", "PromotionTier": tier}
    if az:
        args["AvailabilityZone"] = az
    client.create_db_instance(**args)

    def available() -> bool:
        status = client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]["DBInstanceStatus"]
        if status == "failed":
            raise AssertionError(f"Aurora instance {identifier} failed to come up (see the log for the error)")
        return bool(status == "available")

    wait_until(available, timeout, interval=0.02, what=f"Aurora instance {identifier} to be available")


@pytest.fixture
def aurora_cluster(rds: RdsReconciler, aws: AwsEndpoint, dns_resolver: ResolverHook) -> Callable[..., AuroraHandle]:
    """Factory: ``aurora_cluster(identifier=None, *, readers=2, region=None, db_name="app", user="master",
    password=..., parameters=None, iam=False, tiers=None, timeout=120)`` creates an Aurora PostgreSQL cluster with
    boto3 (``parameters``: a DB cluster parameter group, e.g. ``{"max_connections": "20"}``), its writer and
    ``readers`` readers (``tiers``: their promotion tiers), waits until all are available and returns an
    AuroraHandle. Removed after the test with the other ``rds`` state."""
    from harness.rds.aurora import aurora

    aurora(rds).republish()  # kept clusters: the previous test's DNS cleanup may have taken their names

    def make(identifier: str | None = None, *, readers: int = 2, region: str | None = None, db_name: str = DEFAULT_DB,
             user: str = DEFAULT_USER, password: str = DEFAULT_PASSWORD, parameters: dict[str, str] | None = None,
             iam: bool = False, tiers: list[int] | None = None, timeout: float = 120.0) -> AuroraHandle:
        region = aws.check_region(region)
        identifier = identifier or f"aurora-{next(_ids)}"
        client = aws.client("rds", region=region)
        args: dict[str, Any] = {"DBClusterIdentifier": identifier, "Engine": "aurora-postgresql",
                                "MasterUsername": user, "MasterUserPassword": password, "DatabaseName": db_name}
        group = None
        if parameters:
            group = f"{identifier}-params"
            client.create_db_cluster_parameter_group(DBClusterParameterGroupName=group,
                                                     DBParameterGroupFamily="aurora-postgresql15",
                                                     Description=f"dbdrill test parameters for {identifier}")
            client.modify_db_cluster_parameter_group(
                DBClusterParameterGroupName=group,
                Parameters=[{"ParameterName": k, "ParameterValue": str(v), "ApplyMethod": "pending-reboot"}
                            for k, v in parameters.items()])
            args["DBClusterParameterGroupName"] = group
        if iam:
            args["EnableIAMDatabaseAuthentication"] = True
        desc = client.create_db_cluster(**args)["DBCluster"]
        members = [f"{identifier}-{i + 1}" for i in range(readers + 1)]
        tier_of = [1, *(tiers or [1] * readers)]
        for i, member in enumerate(members):
            _create_member(client, identifier, member, tier_of[i] if i < len(tier_of) else 1, None, timeout)
        return AuroraHandle(identifier=identifier, region=region, writer_endpoint=desc["Endpoint"],
                            reader_endpoint=desc["ReaderEndpoint"], port=int(desc.get("Port") or 5432), user=user,
                            password=password, dbname=db_name, arn=desc["DBClusterArn"], instances=members,
                            reconciler=rds, client=client, parameter_group=group)

    return make


@dataclass
class GlobalHandle:
    """A global database made by ``aurora_global``: its writer endpoint (the primary's writer, through DNS),
    the primary cluster and the secondaries (AuroraHandles; a secondary's endpoints serve read-only)."""

    identifier: str
    endpoint: str
    primary: AuroraHandle
    secondaries: list[AuroraHandle]

    @property
    def secondary(self) -> AuroraHandle:
        return self.secondaries[0]

    def writer_cluster(self) -> str:
        """The primary cluster's identifier, as DescribeGlobalClusters reports it."""
        found = self.primary.client.describe_global_clusters(GlobalClusterIdentifier=self.identifier)
        return str(next(m["DBClusterArn"] for m in found["GlobalClusters"][0]["GlobalClusterMembers"]
                        if m["IsWriter"]).rsplit(":", 1)[1])


@pytest.fixture
def aurora_global(aurora_cluster: Callable[..., AuroraHandle], aws: AwsEndpoint) -> Callable[..., GlobalHandle]:
    """Factory: ``aurora_global(identifier=None, *, readers=1, secondary_regions=None, secondary_instances=2,
    timeout=120)`` creates an Aurora global database with boto3: a primary cluster in the default region (writer
    + ``readers`` readers) and a secondary cluster of ``secondary_instances`` instances in each secondary region
    (default: the next emulated region). Removed after the test with the other ``rds`` state."""

    def make(identifier: str | None = None, *, readers: int = 1, secondary_regions: list[str] | None = None,
             secondary_instances: int = 2, timeout: float = 120.0) -> GlobalHandle:
        identifier = identifier or f"aurora-global-{next(_ids)}"
        primary = aurora_cluster(identifier, readers=readers, timeout=timeout)
        regions = secondary_regions or [next(r for r in aws.regions if r != primary.region)]
        found = primary.client.create_global_cluster(GlobalClusterIdentifier=f"{identifier}-global",
                                                     SourceDBClusterIdentifier=primary.arn)["GlobalCluster"]
        secondaries = []
        for region in regions:
            region = aws.check_region(region)
            client = aws.client("rds", region=region)
            name = f"{identifier}-{region}"
            desc = client.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql",
                                            GlobalClusterIdentifier=found["GlobalClusterIdentifier"])["DBCluster"]
            members = [f"{name}-{i + 1}" for i in range(secondary_instances)]
            for member in members:
                _create_member(client, name, member, 1, None, timeout)
            secondaries.append(AuroraHandle(
                identifier=name, region=region, writer_endpoint=desc["Endpoint"],
                reader_endpoint=desc["ReaderEndpoint"], port=primary.port, user=primary.user,
                password=primary.password, dbname=primary.dbname, arn=desc["DBClusterArn"], instances=members,
                reconciler=primary.reconciler, client=client))
        endpoint = primary.client.describe_global_clusters(
            GlobalClusterIdentifier=found["GlobalClusterIdentifier"])["GlobalClusters"][0]["Endpoint"]
        return GlobalHandle(found["GlobalClusterIdentifier"], endpoint, primary, secondaries)

    return make
