"""Fixtures for the DNS tests: Route53 through boto3, loopback TCP and HTTP targets."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dns_kit import HttpTarget, TcpTarget

from harness.aws.endpoint import AwsEndpoint
from harness.stack import Stack


@pytest.fixture
def route53(aws: AwsEndpoint) -> Any:
    """A boto3 Route53 client on the emulated AWS endpoint (its state is reset after the test)."""
    return aws.client("route53")


@pytest.fixture
def zone(route53: Any) -> Callable[..., str]:
    """``zone(name, private=False) -> zone id``."""

    def make(name: str, private: bool = False) -> str:
        args: dict[str, Any] = {"Name": name, "CallerReference": f"ref-{name}-{private}"}
        if private:
            args["HostedZoneConfig"] = {"PrivateZone": True, "Comment": "private"}
            args["VPC"] = {"VPCRegion": "us-east-1", "VPCId": "vpc-12345678"}
        zone_id: str = route53.create_hosted_zone(**args)["HostedZone"]["Id"]
        return zone_id

    return make


@pytest.fixture
def upsert(route53: Any) -> Callable[..., None]:
    """``upsert(zone_id, name, type, values=None, ttl=60, action="UPSERT", **extra)`` (extra: SetIdentifier,
    Weight, Failover, HealthCheckId, AliasTarget, MultiValueAnswer...)."""

    def change(zone_id: str, name: str, rtype: str, values: list[str] | None = None, ttl: int | None = 60,
               action: str = "UPSERT", **extra: Any) -> None:
        rrset: dict[str, Any] = {"Name": name, "Type": rtype, **extra}
        if values is not None:
            rrset["ResourceRecords"] = [{"Value": v} for v in values]
            rrset["TTL"] = ttl
        route53.change_resource_record_sets(HostedZoneId=zone_id,
                                            ChangeBatch={"Changes": [{"Action": action, "ResourceRecordSet": rrset}]})

    return change


@pytest.fixture
def tcp_target(dbdrill_stack: Stack) -> Iterator[Callable[[], TcpTarget]]:
    """``tcp_target()`` -> a started TcpTarget on its own loopback address; all stopped after the test."""
    made: list[TcpTarget] = []

    def make() -> TcpTarget:
        target = TcpTarget(dbdrill_stack.hosts.allocate()).start()
        made.append(target)
        return target

    yield make
    for t in made:
        t.stop()


@pytest.fixture
def http_target(dbdrill_stack: Stack) -> Iterator[Callable[[], HttpTarget]]:
    made: list[HttpTarget] = []

    def make() -> HttpTarget:
        target = HttpTarget(dbdrill_stack.hosts.allocate())
        made.append(target)
        return target

    yield make
    for t in made:
        t.stop()
