"""Target health of an emulated RDS Proxy, as DescribeDBProxyTargets reports it: the target's state, its writer's
reachability, and a real login with the proxy's secret through the proxy's own link (so a rotated password or a
fenced writer shows up as AWS shows them: UNAVAILABLE with a reason)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.rds.rdsproxy import RdsProxyExtension
    from harness.rds.rdsproxy_runtime import RunningProxy

logger = logging.getLogger(__name__)

AVAILABLE, UNAVAILABLE = "AVAILABLE", "UNAVAILABLE"
_tracked_class: type | None = None


def _unavailable(reason: str, description: str) -> dict[str, str]:
    return {"State": UNAVAILABLE, "Reason": reason, "Description": description}


def target_health(ext: RdsProxyExtension, p: RunningProxy) -> dict[str, str]:
    """``{"State", "Reason"?, "Description"?}`` of the proxy's target now."""
    if p.target is None:
        return _unavailable("UNREACHABLE", "The proxy has no registered target.")
    kind, ident = p.target
    if kind == "instance":
        inst = ext.rec.find(p.region, ident)
        if inst is None:
            return _unavailable("UNREACHABLE", f"DB instance {ident} does not exist (any more).")
        if inst.status != "available":
            return _unavailable("UNREACHABLE", f"DB instance {ident} is {inst.status}.")
        host = inst.primary
        if host.client_cuts or host.net_cuts:
            return _unavailable("CONNECTION_FAILED", f"DB instance {ident}'s writer is unreachable "
                                f"({', '.join(sorted(host.client_cuts | host.net_cuts))}).")
    if p.writer is None:
        return _unavailable("UNREACHABLE", f"No writer of {kind} {ident} is running.")
    import psycopg

    try:
        with ext.probe(p) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if "authentication failed" in text or "password" in text:
            return _unavailable("AUTH_FAILURE", f"The proxy cannot log in as {p.auth[0].username} with the secret "
                                f"{p.auth[0].secret_arn}: {text}")
        if "too many clients" in text:
            return _unavailable("PENDING_PROXY_CAPACITY", f"The target refused a new connection: {text}")
        return _unavailable("CONNECTION_FAILED", f"The proxy cannot connect to the target: {text}")
    return {"State": AVAILABLE}


def tracked(target: Any) -> Any:
    """Make moto's DBProxyTarget report ``dbdrill_health`` (its own is always AVAILABLE after one REGISTERING)."""
    global _tracked_class
    if _tracked_class is None:
        from moto.rds.models import DBProxyTarget

        class TrackedTarget(DBProxyTarget):
            dbdrill_health: dict[str, str] | None = None

            @property
            def registering(self) -> bool:
                return False

            @property
            def target_health(self) -> dict[str, str]:
                return self.dbdrill_health or {"State": AVAILABLE}

        _tracked_class = TrackedTarget
    if not isinstance(target, _tracked_class):
        target.__class__ = _tracked_class
    return target
