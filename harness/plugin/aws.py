"""dbdrill pytest fixtures for emulated AWS: the endpoint (reset per test), the environment for app code,
a DynamoDB client and table helper, and fault helpers. The endpoint starts only for tests that use them."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from faults.api import ApiFault
    from faults.dynamodb import PauseReplication
    from faults.outage import RegionOutage
    from harness.aws.endpoint import AwsEndpoint
    from harness.config import Settings
    from harness.stack import Stack


@pytest.fixture(scope="session")
def aws_endpoint(dbdrill_stack: Stack) -> AwsEndpoint:
    """The session's emulated AWS endpoint (not reset between tests: use ``aws`` for that)."""
    return dbdrill_stack.aws


@pytest.fixture
def aws(request: pytest.FixtureRequest, aws_endpoint: AwsEndpoint, dbdrill_settings: Settings,
        dbdrill_stack: Stack) -> Iterator[AwsEndpoint]:
    """The emulated AWS endpoint. After the test its state (moto resources, fault rules, region cuts, stream
    handlers, DynamoDB meters) is reset, unless --dbdrill-keep-state or the dbdrill_keep_state marker."""
    yield aws_endpoint
    dbdrill_stack.clock.reset()
    keep = dbdrill_settings.keep_state or request.node.get_closest_marker("dbdrill_keep_state") is not None
    if keep:
        # Faults never outlive their test; handlers close over test-local objects.
        aws_endpoint.clear_faults()
        aws_endpoint.dynamodb.streams.stop()
    else:
        aws_endpoint.reset()


@pytest.fixture
def aws_env(aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point code that builds its own clients (``boto3.client("dynamodb")``) at the emulator: AWS_ENDPOINT_URL,
    dummy credentials, default region, no profile or shared files. Restored after the test."""
    import boto3

    from harness.aws.endpoint import env_unset

    for name in env_unset():
        monkeypatch.delenv(name, raising=False)
    values = aws.env()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # boto3 caches a default session (and its credentials) on first use: start from a fresh one.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    return values


@pytest.fixture
def dynamodb(aws: AwsEndpoint) -> Any:
    """A boto3 DynamoDB client on the default region's endpoint."""
    return aws.client("dynamodb")


@dataclass
class DynamoTable:
    name: str
    region: str
    arn: str
    stream_arn: str | None
    client: Any


BILLING = {"on-demand": "PAY_PER_REQUEST", "pay-per-request": "PAY_PER_REQUEST", "provisioned": "PROVISIONED"}


@pytest.fixture
def dynamodb_table(aws: AwsEndpoint) -> Callable[..., DynamoTable]:
    """Factory: ``dynamodb_table(name, hash_key="pk", range_key=None, billing=None, rcu=None, wcu=None,
    ttl_attribute=None, stream=None, gsis=None, region=None)``. ``rcu``/``wcu`` make a provisioned table;
    ``stream`` True means NEW_AND_OLD_IMAGES; ``gsis`` is a list of (name, hash_key[, range_key[, rcu, wcu]])."""

    def make(name: str, hash_key: str = "pk", range_key: str | None = None, *, hash_type: str = "S",
             range_type: str = "S", billing: str | None = None, rcu: int | None = None, wcu: int | None = None,
             ttl_attribute: str | None = None, stream: bool | str | None = None,
             gsis: list[tuple[Any, ...]] | None = None, region: str | None = None) -> DynamoTable:
        region = aws.check_region(region)
        client = aws.client("dynamodb", region=region)
        if billing:
            mode = BILLING.get(billing.lower().replace("_", "-"), billing)
        else:
            mode = "PROVISIONED" if rcu or wcu else "PAY_PER_REQUEST"
        if mode not in ("PROVISIONED", "PAY_PER_REQUEST"):
            raise ValueError(f"billing must be 'provisioned' or 'on-demand', got {billing!r}")
        attrs = {hash_key: hash_type}
        keys = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key:
            attrs[range_key] = range_type
            keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
        args: dict[str, Any] = {"TableName": name, "KeySchema": keys, "BillingMode": mode}
        throughput = {"ReadCapacityUnits": rcu or 1, "WriteCapacityUnits": wcu or 1}
        if mode == "PROVISIONED":
            args["ProvisionedThroughput"] = throughput
        if gsis:
            indexes = []
            for spec in gsis:
                gname, ghash, grange = spec[0], spec[1], spec[2] if len(spec) > 2 else None
                attrs.setdefault(ghash, "S")
                gkeys = [{"AttributeName": ghash, "KeyType": "HASH"}]
                if grange:
                    attrs.setdefault(grange, "S")
                    gkeys.append({"AttributeName": grange, "KeyType": "RANGE"})
                index: dict[str, Any] = {"IndexName": gname, "KeySchema": gkeys,
                                         "Projection": {"ProjectionType": "ALL"}}
                if mode == "PROVISIONED":
                    index["ProvisionedThroughput"] = {"ReadCapacityUnits": spec[3] if len(spec) > 3 else rcu or 1,
                                                      "WriteCapacityUnits": spec[4] if len(spec) > 4 else wcu or 1}
                indexes.append(index)
            args["GlobalSecondaryIndexes"] = indexes
        args["AttributeDefinitions"] = [{"AttributeName": k, "AttributeType": t} for k, t in attrs.items()]
        if stream:
            view = "NEW_AND_OLD_IMAGES" if stream is True else str(stream)
            args["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
        desc = client.create_table(**args)["TableDescription"]
        if ttl_attribute:
            client.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True,
                                                                                 "AttributeName": ttl_attribute})
        return DynamoTable(name, region, desc["TableArn"], desc.get("LatestStreamArn"), client)

    return make


@dataclass
class AwsFaults:
    """Faults bound to the test's endpoint; healed after the test whatever happens."""

    endpoint: AwsEndpoint

    def api_error(self, service: str, operations: Any = None, regions: Any = None, **kw: Any) -> ApiFault:
        from faults.api import api_error

        return api_error(service, operations, regions, endpoint=self.endpoint, **kw)

    def throttle(self, service: str, operations: Any = None, regions: Any = None, **kw: Any) -> ApiFault:
        from faults.api import throttle

        return throttle(service, operations, regions, endpoint=self.endpoint, **kw)

    def internal_error(self, service: str, operations: Any = None, regions: Any = None, **kw: Any) -> ApiFault:
        from faults.api import internal_error

        return internal_error(service, operations, regions, endpoint=self.endpoint, **kw)

    def unavailable(self, service: str, operations: Any = None, regions: Any = None, **kw: Any) -> ApiFault:
        from faults.api import unavailable

        return unavailable(service, operations, regions, endpoint=self.endpoint, **kw)

    def api_latency(self, service: str, ms: float, operations: Any = None, regions: Any = None,
                    **kw: Any) -> ApiFault:
        from faults.api import api_latency

        return api_latency(service, ms, operations, regions, endpoint=self.endpoint, **kw)

    def region_outage(self, region: str, mode: str = "refuse") -> RegionOutage:
        from faults.outage import region_outage

        return region_outage(region, mode, endpoint=self.endpoint)

    def pause_replication(self, table: str, regions: Any = None) -> PauseReplication:
        from faults.dynamodb import pause_replication

        return pause_replication(table, regions, endpoint=self.endpoint)


@pytest.fixture
def aws_faults(aws: AwsEndpoint) -> AwsFaults:
    """Fault constructors bound to the endpoint: ``with aws_faults.throttle("dynamodb", "PutItem"): ...``."""
    return AwsFaults(aws)
