"""DynamoDB faults: pause global-table replication (FIS aws:dynamodb:global-table-pause-replication)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from faults.base import Fault, FaultError

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint


class PauseReplication(Fault):
    """No replication to or from ``regions`` (all replicas when None) of global table ``table`` while active;
    the backlog is shipped after the heal. Unlike AWS (which may go on replicating for up to 5 minutes after
    the FIS action starts), the pause takes effect at once."""

    kind = "dynamodb-pause-replication"

    def __init__(self, table: str, regions: Iterable[str] | str | None = None, *,
                 endpoint: AwsEndpoint | None = None, name: str | None = None) -> None:
        super().__init__(name=name or f"pause-replication:{table}")
        self.table = table
        self.regions = [regions] if isinstance(regions, str) else (list(regions) if regions is not None else None)
        self._endpoint = endpoint
        self._token: int | None = None
        self._used: AwsEndpoint | None = None

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
        self._token = tables.pause(self.table, self.regions)
        self._used = endpoint

    def _heal(self) -> None:
        if self._token is not None and self._used is not None:
            self._used.dynamodb.global_tables.resume(self._token)
            self._token = None

    def describe(self) -> dict[str, Any]:
        return {"table": self.table, "regions": self.regions}

    def target_label(self) -> str:
        return f"{self.table}@{','.join(self.regions) if self.regions else 'all replicas'}"


def pause_replication(table: str, regions: Iterable[str] | str | None = None, *,
                      endpoint: AwsEndpoint | None = None) -> PauseReplication:
    return PauseReplication(table, regions, endpoint=endpoint)


def _fis_pause(params: dict[str, str], targets: dict[str, list[str]], ctx: Any) -> Fault:
    from faults.base import Composite

    endpoint = ctx.extra.get("endpoint") if ctx is not None else None
    parts: list[Fault] = []
    for arn in [a for arns in targets.values() for a in arns]:
        # arn:aws:dynamodb:REGION:ACCOUNT:table/NAME
        fields = arn.split(":")
        if len(fields) < 6 or not fields[5].startswith("table/"):
            raise FaultError(f"not a DynamoDB table ARN: {arn!r}")
        parts.append(PauseReplication(fields[5].split("/")[1], [fields[3]], endpoint=endpoint))
    if not parts:
        raise FaultError("aws:dynamodb:global-table-pause-replication needs at least one target table")
    return parts[0] if len(parts) == 1 else Composite(parts, name="global-table-pause-replication")


def register_fis_actions(registry: Any = None) -> None:
    """Handle aws:dynamodb:global-table-pause-replication in an FIS runner registry (default: the global one):
    replication to and from each targeted replica pauses for the action's duration."""
    from faults.fis import default_registry

    (registry or default_registry).register("aws:dynamodb:global-table-pause-replication", _fis_pause,
                                            replace=True)
