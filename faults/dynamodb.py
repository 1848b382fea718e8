"""DynamoDB faults: pause global-table replication (FIS aws:dynamodb:global-table-pause-replication)."""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from faults.base import Fault, FaultError

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint


class PauseReplication(Fault):
    """No replication to or from ``regions`` (all replicas when None) of global table ``table`` while active;
    the backlog is shipped after the heal. ``linger``: seconds replication goes on after the fault starts before
    the pause takes hold (AWS: up to 5 minutes after the FIS action starts; FIS actions draw it with the ``aws``
    time profile); default 0, at once."""

    kind = "dynamodb-pause-replication"

    def __init__(self, table: str, regions: Iterable[str] | str | None = None, *,
                 endpoint: AwsEndpoint | None = None, linger: float = 0.0, name: str | None = None) -> None:
        super().__init__(name=name or f"pause-replication:{table}")
        if not isinstance(linger, int | float) or isinstance(linger, bool) or not 0 <= linger < float("inf"):
            raise FaultError(f"linger must be a number of seconds >= 0, got {linger!r}", fault=self)
        self.table = table
        self.regions = [regions] if isinstance(regions, str) else (list(regions) if regions is not None else None)
        self.linger = float(linger)
        self._endpoint = endpoint
        self._token: int | None = None
        self._used: AwsEndpoint | None = None
        self._timer: threading.Timer | None = None
        self._pause_lock = threading.Lock()

    def _inject(self) -> None:
        from harness.aws.endpoint import running_endpoint

        endpoint = self._endpoint or running_endpoint()
        if endpoint is None:
            raise FaultError("no emulated AWS endpoint is running: use the `aws` fixture (or stack.aws) first, "
                             "or pass endpoint=", fault=self)
        tables = endpoint.dynamodb.global_tables
        with endpoint.lock:
            group = tables.group(self.table)
        if group is None:
            known = sorted(g.name for g in tables.groups())
            raise FaultError(f"{self.table!r} is not a global table (global tables: {', '.join(known) or 'none'}); "
                             "add a replica first: update_table(ReplicaUpdates=[{'Create': {'RegionName': ...}}])",
                             fault=self)
        unknown = sorted(set(self.regions or ()) - set(group.regions))
        if unknown:
            raise FaultError(f"{self.table} has no replica in {', '.join(unknown)} (replicas: "
                             f"{', '.join(group.regions)})", fault=self)
        self._used = endpoint
        if self.linger > 0:
            self._timer = threading.Timer(self.linger, self._pause)
            self._timer.daemon = True
            self._timer.start()
        else:
            self._pause()

    def _pause(self) -> None:
        with self._pause_lock:
            if self._used is not None and self._token is None:
                self._token = self._used.dynamodb.global_tables.pause(self.table, self.regions)

    def _heal(self) -> None:
        with self._pause_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._token is not None and self._used is not None:
                self._used.dynamodb.global_tables.resume(self._token)
            self._token, self._used = None, None

    def describe(self) -> dict[str, Any]:
        return {"table": self.table, "regions": self.regions, "linger": self.linger}

    def target_label(self) -> str:
        return f"{self.table}@{','.join(self.regions) if self.regions else 'all replicas'}"


def pause_replication(table: str, regions: Iterable[str] | str | None = None, *,
                      endpoint: AwsEndpoint | None = None, linger: float = 0.0) -> PauseReplication:
    return PauseReplication(table, regions, endpoint=endpoint, linger=linger)


FIS_MAX_LINGER = 300.0  # AWS: replication may go on for up to 5 minutes after the action starts


def _fis_linger(endpoint: Any, ctx: Any) -> float:
    """With the ``aws`` time profile, how long replication goes on after the FIS action starts: drawn up to 5
    minutes (scaled like the experiment's durations); at once with ``fast``."""
    if endpoint is None:
        from harness.aws.endpoint import running_endpoint

        endpoint = running_endpoint()
    profile = getattr(getattr(endpoint, "settings", None), "time_profile", "fast")
    if profile != "aws" or ctx is None:
        return 0.0
    return float(ctx.rng.uniform(0.0, FIS_MAX_LINGER) * ctx.time_scale)


def _fis_pause(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> Fault:
    from faults.base import Composite

    endpoint = ctx.extra.get("endpoint") if ctx is not None else None
    parts: list[Fault] = []
    for arn in [a for arns in targets.values() for a in arns]:
        # arn:aws:dynamodb:REGION:ACCOUNT:table/NAME
        fields = arn.split(":")
        if len(fields) < 6 or not fields[5].startswith("table/"):
            raise FaultError(f"not a DynamoDB table ARN: {arn!r}")
        parts.append(PauseReplication(fields[5].split("/")[1], [fields[3]], endpoint=endpoint,
                                      linger=_fis_linger(endpoint, ctx)))
    if not parts:
        raise FaultError("aws:dynamodb:global-table-pause-replication needs at least one target table")
    return parts[0] if len(parts) == 1 else Composite(parts, name="global-table-pause-replication")


def register_fis_actions(registry: Any = None) -> None:
    """Handle aws:dynamodb:global-table-pause-replication in an FIS runner registry (default: the global one):
    replication to and from each targeted replica pauses for the action's duration."""
    from faults.fis import default_registry

    (registry or default_registry).register("aws:dynamodb:global-table-pause-replication", _fis_pause,
                                            replace=True)
