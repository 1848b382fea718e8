"""Outages of a whole region (and, once parts are registered, of an availability zone): composites of the
faults that make every endpoint there unreachable. Each area registers its own part, so a region outage cuts
the AWS API of that region today and the RDS instances there once the RDS area adds its part."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faults.base import Composite, Fault, FaultError

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint

MODES = ("refuse", "blackhole")
# A part factory gets (target, mode, context) -- target a region or AZ name, context the keyword arguments
# given to region_outage/az_outage (endpoint=..., stack=...) -- and returns the faults making up its share.
PartFactory = Callable[[str, str, dict[str, Any]], list[Fault]]

_parts: dict[str, dict[str, PartFactory]] = {"region": {}, "az": {}}
_parts_lock = threading.Lock()


def register_outage_part(scope: str, name: str, factory: PartFactory) -> None:
    """Add (or replace) a part of every ``scope`` ("region" or "az") outage."""
    if scope not in _parts:
        raise ValueError(f"scope must be 'region' or 'az', got {scope!r}")
    with _parts_lock:
        _parts[scope][name] = factory


def unregister_outage_part(scope: str, name: str) -> None:
    with _parts_lock:
        _parts.get(scope, {}).pop(name, None)


def outage_parts(scope: str) -> dict[str, PartFactory]:
    with _parts_lock:
        return dict(_parts.get(scope, {}))


class RegionCut(Fault):
    """The emulated AWS server refuses (RST) or blackholes every request signed for the region: what app
    clients built from AWS_ENDPOINT_URL (one URL for all regions) see during a region outage."""

    kind = "aws-region-cut"

    def __init__(self, endpoint: AwsEndpoint, region: str, mode: str = "refuse", *, name: str | None = None) -> None:
        super().__init__(name=name or f"aws-region-cut:{region}")
        self.endpoint, self.region, self.mode = endpoint, region, mode
        self._token: int | None = None

    def _inject(self) -> None:
        self._token = self.endpoint.cut_region(self.region, self.mode)

    def _heal(self) -> None:
        if self._token is not None:
            self.endpoint.heal_cut(self._token)
            self._token = None

    def describe(self) -> dict[str, Any]:
        return {"region": self.region, "mode": self.mode}

    def target_label(self) -> str:
        return self.region


class Outage(Composite):
    """All parts of a region / AZ outage as one fault (all-or-nothing injection, healed together)."""

    def __init__(self, scope: str, target: str, mode: str, parts: list[Fault]) -> None:
        super().__init__(parts, name=f"{scope}-outage:{target}")
        self.scope, self.target, self.mode = scope, target, mode

    def describe(self) -> dict[str, Any]:
        return {self.scope: self.target, "mode": self.mode, "parts": [p.name for p in self.parts]}

    def target_label(self) -> str:
        return self.target


class RegionOutage(Outage):
    kind = "region-outage"


class AzOutage(Outage):
    kind = "az-outage"


def _aws_region_part(region: str, mode: str, context: dict[str, Any]) -> list[Fault]:
    """The region's AWS API: its proxied endpoint (refused or blackholed at the fault proxy) and the server's
    own cut by signature region, for clients that use the single AWS_ENDPOINT_URL."""
    from faults.network import blackhole, partition

    endpoint: AwsEndpoint | None = context.get("endpoint")
    if endpoint is None:
        from harness.aws.endpoint import running_endpoint

        endpoint = running_endpoint()
    if endpoint is None:
        return []
    proxy = endpoint.proxy_name(region)
    client = endpoint.stack.toxiproxy
    network = partition([proxy], client=client) if mode == "refuse" else blackhole([proxy], client=client)
    # The in-process cut first: it takes effect at once, the proxy's needs an API round trip.
    return [RegionCut(endpoint, region, mode), network]


register_outage_part("region", "aws-api", _aws_region_part)


# Modules that register parts when imported (an outage must cut them even if the test never imported them).
PART_PROVIDERS = ("faults.database", "faults.aurora")


def _load_providers() -> None:
    import importlib

    for name in PART_PROVIDERS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def _outage(scope: str, target: str, mode: str, context: dict[str, Any]) -> list[Fault]:
    _load_providers()
    if mode not in MODES:
        raise FaultError(f"{scope} outage mode must be 'refuse' (connections reset) or 'blackhole' (no answer), "
                         f"got {mode!r}")
    parts: list[Fault] = []
    for name, factory in outage_parts(scope).items():
        try:
            parts += factory(target, mode, context)
        except FaultError:
            raise
        except Exception as exc:
            raise FaultError(f"{scope} outage of {target}: part {name!r} failed: {exc}") from exc
    return parts


def region_outage(region: str, mode: str = "refuse", *, endpoint: AwsEndpoint | None = None,
                  **context: Any) -> RegionOutage:
    """Every endpoint of ``region`` unreachable: "refuse" resets connections, "blackhole" accepts and never
    answers. Other regions keep working. Global-table replication to and from the region pauses and
    catches up after the heal."""
    from harness.aws.endpoint import running_endpoint

    ep = endpoint or running_endpoint()
    if ep is not None:
        from harness.errors import HarnessError

        try:
            ep.check_region(region)
        except HarnessError as exc:
            raise FaultError(str(exc)) from exc
    parts = _outage("region", region, mode, {"endpoint": ep, **context})
    if not parts:
        raise FaultError(f"nothing to cut in region {region}: no AWS endpoint is running (use the `aws` fixture "
                         "or stack.aws first, or pass endpoint=)")
    return RegionOutage("region", region, mode, parts)


def az_outage(az: str, mode: str = "blackhole", **context: Any) -> AzOutage:
    """Every endpoint in availability zone ``az`` unreachable, from the parts registered for scope "az"."""
    parts = _outage("az", az, mode, context)
    if not parts:
        raise FaultError(f"nothing to cut in availability zone {az}: no AZ outage part is registered "
                         "(register_outage_part('az', ...))")
    return AzOutage("az", az, mode, parts)
