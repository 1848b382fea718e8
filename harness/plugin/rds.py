"""dbdrill pytest fixtures for real RDS: the reconciler (its DB instances removed after each test), a
``postgres_instance`` factory (boto3 create, wait for available, endpoint and DSN) and ``pg_connect``, which
connects by endpoint name through dbdrill's DNS. Services start only for tests that use these fixtures."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint
    from harness.config import Settings
    from harness.dns.resolver import ResolverHook
    from harness.rds.fleet import Instance
    from harness.rds.reconciler import RdsReconciler
    from harness.stack import Stack

DEFAULT_USER = "master"
DEFAULT_PASSWORD = "dbdrill-pass-1"
DEFAULT_DB = "app"
_ids = itertools.count(1)


@pytest.fixture(scope="session")
def rds_reconciler(dbdrill_stack: Stack) -> RdsReconciler:
    """The session's RDS reconciler (DB instances are not removed between tests: use ``rds`` for that)."""
    return dbdrill_stack.rds


@pytest.fixture
def rds(request: pytest.FixtureRequest, rds_reconciler: RdsReconciler, aws: AwsEndpoint,
        dbdrill_settings: Settings) -> Iterator[RdsReconciler]:
    """The RDS reconciler: boto3 RDS calls against ``aws`` run real PostgreSQL. Its DB instances (servers,
    proxies, DNS names, moto records), AZ outages and fences are removed after the test, unless
    --dbdrill-keep-state or the dbdrill_keep_state marker."""
    rds_reconciler.republish()  # kept instances: the previous test's DNS cleanup may have taken their names
    yield rds_reconciler
    keep = dbdrill_settings.keep_state or request.node.get_closest_marker("dbdrill_keep_state") is not None
    if not keep:
        rds_reconciler.reset()


@dataclass
class PostgresInstance:
    """A DB instance made by ``postgres_instance``: its endpoint (a DNS name dbdrill serves) and master login."""

    identifier: str
    region: str
    address: str
    port: int
    user: str
    password: str
    dbname: str
    arn: str
    reconciler: RdsReconciler
    client: Any

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.address, self.port

    @property
    def dsn(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.address, port=self.port, user=self.user, password=self.password,
                             dbname=self.dbname)

    @property
    def instance(self) -> Instance:
        """The live topology (primary / standby hosts, replicas) behind the instance."""
        return self.reconciler.instance(self.identifier, self.region)

    def describe(self) -> dict[str, Any]:
        desc: dict[str, Any] = self.client.describe_db_instances(DBInstanceIdentifier=self.identifier)["DBInstances"][0]
        return desc

    def connect(self, **kwargs: Any) -> Any:
        """psycopg connection by endpoint name (resolved through dbdrill's DNS), autocommit, 5 s connect timeout."""
        import psycopg

        options: dict[str, Any] = {"autocommit": True, "connect_timeout": 5, **kwargs}
        return psycopg.connect(self.dsn, **options)


def _wait_available(client: Any, identifier: str, timeout: float) -> dict[str, Any]:
    from harness.wait import wait_until

    def status() -> dict[str, Any] | None:
        desc: dict[str, Any] = client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        if desc["DBInstanceStatus"] == "failed":
            raise AssertionError(f"DB instance {identifier} failed to come up (see the log for the error)")
        return desc if desc["DBInstanceStatus"] == "available" else None

    desc: dict[str, Any] = wait_until(status, timeout, interval=0.02, what=f"DB instance {identifier} to be available")
    return desc


@pytest.fixture
def postgres_instance(rds: RdsReconciler, aws: AwsEndpoint,
                      dns_resolver: ResolverHook) -> Callable[..., PostgresInstance]:
    """Factory: ``postgres_instance(identifier=None, *, region=None, multi_az=False, source=None, az=None,
    db_name="app", user="master", password=..., port=5432, timeout=120)`` creates a PostgreSQL DB instance with
    boto3 (a read replica of ``source`` — a PostgresInstance or identifier — when given), waits until it is
    available and returns its endpoint and login. Removed after the test with the other ``rds`` state."""

    def make(identifier: str | None = None, *, region: str | None = None, multi_az: bool = False,
             source: PostgresInstance | str | None = None, az: str | None = None, db_name: str = DEFAULT_DB,
             user: str = DEFAULT_USER, password: str = DEFAULT_PASSWORD, port: int = 5432,
             timeout: float = 120.0) -> PostgresInstance:
        region = aws.check_region(region)
        identifier = identifier or f"pg-{next(_ids)}"
        client = aws.client("rds", region=region)
        if source is not None:
            src = source if isinstance(source, PostgresInstance) else None
            src_id = src.identifier if src else str(source)
            src_region = src.region if src else region
            ref = src_id if src_region == region else \
                f"arn:aws:rds:{src_region}:{aws.account_id}:db:{src_id}"
            args: dict[str, Any] = {"DBInstanceIdentifier": identifier, "SourceDBInstanceIdentifier": ref,
                                    "DBInstanceClass": "db.t3.micro"}
            if az:
                args["AvailabilityZone"] = az
            client.create_db_instance_read_replica(**args)
            base = rds.instance(src_id, src_region)
            user, password, db_name = base.user, base.password, base.db_name
        else:
            args = {"DBInstanceIdentifier": identifier, "Engine": "postgres", "DBInstanceClass": "db.t3.micro",
                    "MasterUsername": user, "MasterUserPassword": password, "DBName": db_name,
                    "AllocatedStorage": 20, "MultiAZ": multi_az, "Port": port}
            if az:
                args["AvailabilityZone"] = az
            client.create_db_instance(**args)
        desc = _wait_available(client, identifier, timeout)
        return PostgresInstance(identifier=identifier, region=region, address=desc["Endpoint"]["Address"],
                                port=int(desc["Endpoint"]["Port"]), user=user, password=password, dbname=db_name,
                                arn=desc["DBInstanceArn"], reconciler=rds, client=client)

    return make


@pytest.fixture
def pg_connect(dns_resolver: ResolverHook) -> Callable[..., Any]:
    """``pg_connect(target, **psycopg_kwargs)``: a psycopg connection to a PostgresInstance, an Instance, a DSN
    or an endpoint name, resolving names through dbdrill's DNS (the test's resolver hook), autocommit."""
    import psycopg

    def connect(target: Any, **kwargs: Any) -> Any:
        options: dict[str, Any] = {"autocommit": True, "connect_timeout": 5, **kwargs}
        if isinstance(target, PostgresInstance):
            return target.connect(**kwargs)
        if hasattr(target, "dsn") and callable(target.dsn):
            return psycopg.connect(target.dsn(), **options)
        text = str(target)
        if "=" in text or "://" in text:
            return psycopg.connect(text, **options)
        return psycopg.connect(host=text, **options)  # an endpoint name or address

    return connect


@pytest.fixture
def rds_proxy(rds: RdsReconciler, aws: AwsEndpoint, dns_resolver: ResolverHook) -> Callable[..., Any]:
    """Factory: ``rds_proxy(target, *, name=None, user=None, password=None, iam=False, idle_client_timeout=None,
    pool=None, timeout=60)`` puts an RDS Proxy (a real PgBouncer) in front of ``target`` (a PostgresInstance or
    identifier): a Secrets Manager secret with the login (default the master's), create_db_proxy, the target
    registered, ``pool`` as ConnectionPoolConfig; waits until the target is AVAILABLE and returns an ``RdsProxy``
    (``endpoint``, ``dsn``, ``connect()``, ``describe()``, ``targets()``). Removed after the test with ``rds``."""
    from harness.rds.rdsproxy import proxy_extension
    from harness.rds.rdsproxy_client import make_proxy

    proxy_extension(rds).republish()  # kept proxies: the previous test's DNS cleanup may have taken their names

    def make(target: Any, **kwargs: Any) -> Any:
        return make_proxy(aws, rds, target, **kwargs)

    return make
