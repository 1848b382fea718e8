"""Making an RDS Proxy the way an application's infrastructure code does (a Secrets Manager secret, create_db_proxy
in the default VPC's subnets, register_db_proxy_targets, wait until the target is AVAILABLE), and a handle with its
endpoint and login: used by the ``rds_proxy`` fixture, the rds_proxy_storm drill and the benchmark."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.wait import wait_until

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint
    from harness.rds.rdsproxy_runtime import RunningProxy
    from harness.rds.reconciler import RdsReconciler

_ids = itertools.count(1)
ROLE_ARN = "arn:aws:iam::{account}:role/dbdrill-rds-proxy"


@dataclass
class RdsProxy:
    """A DB proxy made by ``make_proxy``: endpoint (a DNS name dbdrill serves), the login its secret holds."""

    name: str
    region: str
    endpoint: str
    port: int
    user: str
    password: str
    dbname: str
    arn: str
    secret_arn: str
    target: str
    reconciler: RdsReconciler
    client: Any

    @property
    def address(self) -> str:
        return self.endpoint

    @property
    def dsn(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.endpoint, port=self.port, user=self.user, password=self.password,
                             dbname=self.dbname)

    @property
    def running(self) -> RunningProxy:
        """The live proxy (its PgBouncer, fault proxy names, current writer)."""
        from harness.rds.rdsproxy import proxy_extension

        return proxy_extension(self.reconciler).proxy(self.name, self.region)

    @property
    def fault_proxy(self) -> str:
        """The fault proxy in front of the endpoint: network faults by this name hit the proxy's clients."""
        return self.running.front_proxy

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = self.client.describe_db_proxies(DBProxyName=self.name)["DBProxies"][0]
        return found

    def targets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.client.describe_db_proxy_targets(DBProxyName=self.name)["Targets"]
        return found

    def connect(self, **kwargs: Any) -> Any:
        """psycopg connection through the proxy, by endpoint name: autocommit, 5 s connect timeout, no server-side
        prepared statements (PgBouncer 1.18 in transaction mode cannot keep them, as RDS Proxy would pin)."""
        import psycopg

        options: dict[str, Any] = {"autocommit": True, "connect_timeout": 5, "prepare_threshold": None, **kwargs}
        return psycopg.connect(self.dsn, **options)


def default_subnets(aws: AwsEndpoint, region: str) -> list[str]:
    """Two subnets of the region's default VPC (create_db_proxy requires VpcSubnetIds)."""
    ec2 = aws.client("ec2", region=region)
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    return [s["SubnetId"] for s in subnets[:2]] or [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"][:2]]


def make_proxy(aws: AwsEndpoint, rec: RdsReconciler, target: Any, *, name: str | None = None,
               region: str | None = None, user: str | None = None, password: str | None = None,
               dbname: str | None = None, iam: bool = False, idle_client_timeout: int | None = None,
               pool: dict[str, Any] | None = None, timeout: float = 60.0) -> RdsProxy:
    """A proxy for ``target`` (a PostgresInstance / Instance / identifier), logging in with ``user``/``password``
    (default: the target's master login) stored in a new Secrets Manager secret; ``pool`` is the target group's
    ConnectionPoolConfig. Returns when describe_db_proxy_targets says AVAILABLE."""
    ident = target if isinstance(target, str) else target.identifier
    region = aws.check_region(region or getattr(target, "region", None))
    inst = rec.instance(ident, region)
    name = name or f"proxy-{next(_ids)}"
    user, password = user or inst.user, password or inst.password
    sm = aws.client("secretsmanager", region=region)
    secret_arn = sm.create_secret(Name=f"dbdrill/rds-proxy/{name}",
                                  SecretString=json.dumps({"username": user, "password": password}))["ARN"]
    client = aws.client("rds", region=region)
    args: dict[str, Any] = {
        "DBProxyName": name, "EngineFamily": "POSTGRESQL", "RoleArn": ROLE_ARN.format(account=aws.account_id),
        "Auth": [{"AuthScheme": "SECRETS", "SecretArn": secret_arn, "IAMAuth": "REQUIRED" if iam else "DISABLED"}],
        "VpcSubnetIds": default_subnets(aws, region)}
    if idle_client_timeout is not None:
        args["IdleClientTimeout"] = idle_client_timeout
    client.create_db_proxy(**args)
    if pool:
        client.modify_db_proxy_target_group(DBProxyName=name, TargetGroupName="default", ConnectionPoolConfig=pool)
    client.register_db_proxy_targets(DBProxyName=name, DBInstanceIdentifiers=[ident])

    def ready() -> dict[str, Any] | None:
        desc: dict[str, Any] = client.describe_db_proxies(DBProxyName=name)["DBProxies"][0]
        if desc["Status"] != "available":
            return None
        health = client.describe_db_proxy_targets(DBProxyName=name)["Targets"][0]["TargetHealth"]
        return desc if health["State"] == "AVAILABLE" else None

    desc = wait_until(ready, timeout, interval=0.05, what=f"RDS Proxy {name} and its target to be available")
    return RdsProxy(name=name, region=region, endpoint=desc["Endpoint"], port=5432, user=user, password=password,
                    dbname=dbname or inst.db_name, arn=desc["DBProxyArn"], secret_arn=secret_arn, target=ident,
                    reconciler=rec, client=client)
