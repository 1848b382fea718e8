"""Every FIS action the emulator can perform, registered in one call (the CLI and the drills use it), and the
network actions, which cut across areas: subnets stand for their Availability Zones."""
from __future__ import annotations

import importlib
import logging
from typing import Any

from faults.base import Composite, Fault, FaultError

logger = logging.getLogger(__name__)

# Modules with a ``register_fis_actions(registry)``; a module that is missing is skipped.
PROVIDERS = ("faults.api", "faults.dynamodb", "faults.database", "faults.aurora", "faults.network")
AZ_SCOPES = ("all", "availability-zone")


def _endpoint(ctx: Any) -> Any:
    endpoint = ctx.extra.get("endpoint") if ctx is not None else None
    if endpoint is None:
        from harness.aws.endpoint import running_endpoint

        endpoint = running_endpoint()
    if endpoint is None:
        raise FaultError("network FIS actions need the emulated AWS endpoint running (its EC2 subnets say which "
                         "Availability Zone each target is in)")
    return endpoint


def subnet_zones(arns: list[str], ctx: Any) -> list[tuple[str, str]]:
    """(region, availability zone) of each subnet ARN, from the emulated EC2 API."""
    endpoint = _endpoint(ctx)
    by_region: dict[str, list[str]] = {}
    for arn in arns:
        fields = arn.split(":")
        if len(fields) < 6 or fields[2] != "ec2" or not fields[5].startswith("subnet/"):
            raise FaultError(f"not a subnet ARN (arn:aws:ec2:REGION:ACCOUNT:subnet/ID): {arn!r}")
        by_region.setdefault(fields[3], []).append(fields[5].split("/", 1)[1])
    zones: list[tuple[str, str]] = []
    for region, ids in by_region.items():
        subnets = endpoint.client("ec2", region=region).describe_subnets(SubnetIds=ids)["Subnets"]
        zones += sorted({(region, s["AvailabilityZone"]) for s in subnets})
    return zones


def _disrupt_connectivity(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> Fault:
    """aws:network:disrupt-connectivity: with scope all / availability-zone, every host in the subnets' zones is
    cut off (an AZ outage: Multi-AZ databases there fail over)."""
    from faults.outage import az_outage

    scope = params.get("scope", "all")
    if scope not in AZ_SCOPES:
        raise FaultError(f"aws:network:disrupt-connectivity scope {scope!r} is not emulated; supported: "
                         f"{', '.join(AZ_SCOPES)}")
    zones = subnet_zones(targets.get("Subnets", []), ctx)
    if not zones:
        raise FaultError("aws:network:disrupt-connectivity needs at least one subnet target")
    parts: list[Fault] = [az_outage(az) for _, az in zones]
    return parts[0] if len(parts) == 1 else Composite(parts, name="disrupt-connectivity")


def _cross_region(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> Fault:
    """aws:network:route-table-disrupt-cross-region-connectivity: traffic between the subnets' region and
    ``region`` (default: every other region) stops — RDS replication links between them and DynamoDB global
    table replication to and from the subnets' region."""
    zones = subnet_zones(targets.get("Subnets", []), ctx)
    if not zones:
        raise FaultError("route-table-disrupt-cross-region-connectivity needs at least one subnet target")
    endpoint = _endpoint(ctx)
    source = zones[0][0]
    others = [params["region"]] if params.get("region") else [r for r in endpoint.regions if r != source]
    for other in others:
        endpoint.check_region(other)
    parts: list[Fault] = []
    rec = _reconciler()
    if rec is not None:
        from faults.database import PauseReplication

        with rec.lock:
            instances = list(rec.instances.values())
        pair = {source, *others}
        for inst in instances:
            if inst.source is not None and inst.region != inst.source.region and \
                    {inst.region, inst.source.region} <= pair and source in (inst.region, inst.source.region):
                parts.append(PauseReplication(inst.identifier, region=inst.region, reconciler=rec))
    from faults.dynamodb import pause_replication

    for group in endpoint.dynamodb.global_tables.groups():
        if source in group.regions and any(o in group.regions for o in others):
            parts.append(pause_replication(group.name, [source], endpoint=endpoint))
    if not parts:
        raise FaultError(f"nothing crosses from {source} to {', '.join(others)}: no cross-region RDS replica or "
                         "global table there")
    return Composite(parts, name=f"cross-region-cut-{source}")


def _reconciler() -> Any:
    from harness.errors import HarnessError
    from harness.rds.reconciler import current_reconciler

    try:
        return current_reconciler()
    except HarnessError:
        return None


def register_fis_actions(registry: Any = None) -> None:
    from faults.fis import default_registry

    reg = registry or default_registry
    reg.register("aws:network:disrupt-connectivity", _disrupt_connectivity, replace=True)
    reg.register("aws:network:route-table-disrupt-cross-region-connectivity", _cross_region, replace=True)


def register_all(registry: Any = None) -> list[str]:
    """Register the emulator's handlers in ``registry`` (default: the global one); returns the
    action ids that are supported afterwards."""
    from faults.fis import default_registry

    reg = registry or default_registry
    for name in PROVIDERS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        register = getattr(mod, "register_fis_actions", None)
        if register is not None:
            register(reg)
    register_fis_actions(reg)
    supported: list[str] = reg.supported()
    return supported
