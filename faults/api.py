"""API-level faults on the emulated AWS endpoint (FIS aws:fis:inject-api-* style): errors, throttling,
unavailability and latency for a service, optionally only some operations / regions, with a probability."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from faults.base import Fault, FaultError
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint
    from harness.aws.middleware import FaultRule

Names = Iterable[str] | str | None


def _endpoint(endpoint: AwsEndpoint | None) -> AwsEndpoint | None:
    if endpoint is not None:
        return endpoint
    from harness.aws.endpoint import running_endpoint

    return running_endpoint()


class ApiFault(Fault):
    """One fault rule on the endpoint while active. Parameters are checked when the fault is made (service
    and operation names against botocore's model, probability, regions against the running endpoint) and
    again at injection, so a bad fault raises FaultError before anything changes."""

    kind = "api"

    def __init__(self, service: str, rule_kind: str, *, operations: Names = None, regions: Names = None,
                 error: str | None = None, status: int | None = None, message: str | None = None,
                 latency: float = 0.0, jitter: float = 0.0, probability: float = 1.0, seed: int | None = None,
                 endpoint: AwsEndpoint | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self.service = service
        self.rule_kind = rule_kind
        self.options: dict[str, Any] = {
            "operations": [operations] if isinstance(operations, str) else
            (list(operations) if operations is not None else None),
            "regions": [regions] if isinstance(regions, str) else (list(regions) if regions is not None else None),
            "code": error, "status": status, "message": message, "latency": latency, "jitter": jitter,
            "probability": probability, "seed": seed,
        }
        self._endpoint = endpoint
        self.rule: FaultRule | None = None
        self._check(_endpoint(endpoint))

    def _check(self, endpoint: AwsEndpoint | None) -> FaultRule:
        from harness.aws.middleware import make_rule

        try:
            return make_rule(self.service, self.rule_kind, known_regions=endpoint.regions if endpoint else None,
                             **self.options)
        except HarnessError as exc:
            raise FaultError(f"{self.kind} fault: {exc}", fault=self) from exc

    def _inject(self) -> None:
        endpoint = _endpoint(self._endpoint)
        if endpoint is None:
            raise FaultError("no emulated AWS endpoint is running: use the `aws` fixture (or stack.aws) first, "
                             "or pass endpoint=", fault=self)
        rule = self._check(endpoint)
        endpoint.add_fault_rule(rule)
        self.rule = rule
        self._endpoint = endpoint

    def _heal(self) -> None:
        if self.rule is not None and self._endpoint is not None:
            self._endpoint.remove_fault_rule(self.rule)

    @property
    def hits(self) -> int:
        """Requests this fault failed or delayed so far."""
        return self.rule.hits if self.rule is not None else 0

    def describe(self) -> dict[str, Any]:
        out = {"service": self.service, **{k: v for k, v in self.options.items() if v not in (None, 0.0, 0)}}
        if self.rule is not None:
            out.update(code=self.rule.code or None, hits=self.rule.hits, matched=self.rule.matched)
        return out

    def target_label(self) -> str:
        ops = ",".join(self.options["operations"] or ["*"])
        regions = ",".join(self.options["regions"] or ["all regions"])
        return f"{self.service}:{ops}@{regions}"


class ApiErrorFault(ApiFault):
    kind = "api-error"


class ThrottleFault(ApiFault):
    kind = "api-throttle"


class InternalErrorFault(ApiFault):
    kind = "api-internal-error"


class UnavailableFault(ApiFault):
    kind = "api-unavailable"


class ApiLatencyFault(ApiFault):
    kind = "api-latency"


def api_error(service: str, operations: Names = None, regions: Names = None, *, error: str,
              probability: float = 1.0, status: int | None = None, message: str | None = None,
              endpoint: AwsEndpoint | None = None, seed: int | None = None) -> ApiFault:
    """Fail matching requests with AWS error ``error`` (status from the code, e.g. 400 for
    ThrottlingException, 500 for InternalServerError, unless ``status`` is given)."""
    if not error:
        raise FaultError("api_error needs an error code, e.g. error='ThrottlingException'")
    return ApiErrorFault(service, "error", operations=operations, regions=regions, error=error, status=status,
                    message=message, probability=probability, endpoint=endpoint, seed=seed)


def throttle(service: str, operations: Names = None, regions: Names = None, *, probability: float = 1.0,
             error: str | None = None, endpoint: AwsEndpoint | None = None, seed: int | None = None) -> ApiFault:
    """The service's own throttling error: ProvisionedThroughputExceededException for DynamoDB data calls,
    ThrottlingException / Throttling elsewhere (FIS aws:fis:inject-api-throttle-error)."""
    return ThrottleFault(service, "throttle", operations=operations, regions=regions, error=error,
                    probability=probability, endpoint=endpoint, seed=seed)


def internal_error(service: str, operations: Names = None, regions: Names = None, *, probability: float = 1.0,
                   endpoint: AwsEndpoint | None = None, seed: int | None = None) -> ApiFault:
    """HTTP 500 InternalServerError / InternalFailure (FIS aws:fis:inject-api-internal-error)."""
    return InternalErrorFault(service, "internal", operations=operations, regions=regions, probability=probability,
                    endpoint=endpoint, seed=seed)


def unavailable(service: str, operations: Names = None, regions: Names = None, *, probability: float = 1.0,
                endpoint: AwsEndpoint | None = None, seed: int | None = None) -> ApiFault:
    """HTTP 503 ServiceUnavailable (FIS aws:fis:inject-api-unavailable-error)."""
    return UnavailableFault(service, "unavailable", operations=operations, regions=regions, probability=probability,
                    endpoint=endpoint, seed=seed)


def api_latency(service: str, ms: float, operations: Names = None, regions: Names = None, *,
                jitter_ms: float = 0.0, probability: float = 1.0, endpoint: AwsEndpoint | None = None,
                seed: int | None = None) -> ApiFault:
    """Delay matching requests by ``ms`` (+- ``jitter_ms``) before the service answers."""
    return ApiLatencyFault(service, "latency", operations=operations, regions=regions, latency=ms / 1000.0,
                    jitter=jitter_ms / 1000.0, probability=probability, endpoint=endpoint, seed=seed)


def _fis_handler(kind: str) -> Any:
    factories = {"internal": internal_error, "throttle": throttle, "unavailable": unavailable}

    def handler(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> ApiFault:
        try:
            percentage = float(params.get("percentage", "100"))
        except ValueError as exc:
            raise FaultError(f"percentage must be a number 0..100, got {params.get('percentage')!r}") from exc
        ops = [o.strip() for o in params.get("operations", "").split(",") if o.strip() and o.strip() != "all"]
        fault: ApiFault = factories[kind](params.get("service", ""), ops or None, probability=percentage / 100,
                                          endpoint=ctx.extra.get("endpoint") if ctx is not None else None)
        return fault

    return handler


def register_fis_actions(registry: Any = None) -> None:
    """Handle aws:fis:inject-api-{internal,throttle,unavailable}-error in an FIS runner registry (default: the
    global one). The endpoint comes from the runner's ``extra={"endpoint": ...}`` or the running one."""
    from faults.fis import default_registry

    reg = registry or default_registry
    for kind in ("internal", "throttle", "unavailable"):
        reg.register(f"aws:fis:inject-api-{kind}-error", _fis_handler(kind), replace=True)
