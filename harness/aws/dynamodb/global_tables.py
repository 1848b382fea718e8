"""DynamoDB global tables (version 2019.11.21, plus the 2017 CreateGlobalTable/DescribeGlobalTable calls):
replica tables in several regions kept in sync from their streams after a configurable lag, last writer
wins by (clock time of the write, order the emulator received it), replication paused while a region is
cut or a pause is active, caught up afterwards."""
from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.aws.dynamodb.patches import RecordMeta, _key_types, add_stream_listener, meta_of, replicating
from harness.aws.dynamodb.streams import EndpointLike
from harness.errors import HarnessError

logger = logging.getLogger(__name__)

Version = tuple[float, int]  # (clock time of the original write, emulator-wide write counter)


class GlobalTableError(HarnessError):
    """A global-table request AWS would refuse; ``code`` is the AWS error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Group:
    name: str
    account: str
    regions: list[str]
    created: float
    legacy: bool = False  # made by CreateGlobalTable (version 2017.11.29)
    cursors: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, destination) -> record index
    shards: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, dict[str, Version]] = field(default_factory=dict)  # region -> item key -> version


def _key(keys: dict[str, Any]) -> str:
    return json.dumps(keys, sort_keys=True)


class GlobalTables:
    """Replication groups of one endpoint. ``lag`` seconds (on the clock) pass between a write and its
    arrival in the other replicas."""

    def __init__(self, endpoint: EndpointLike, *, lag: float = 0.0, interval: float = 0.02) -> None:
        self.endpoint = endpoint
        self.lag = lag
        self.interval = interval
        self.replicated = 0
        self.conflicts_lost = 0
        self._groups: dict[tuple[str, str], Group] = {}
        self._pauses: dict[int, tuple[str | None, frozenset[str] | None]] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._applying: Version | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove_listener = add_stream_listener(self._on_record)

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> GlobalTables:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dbdrill-global-tables", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._remove_listener()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def reset(self) -> None:
        with self.endpoint.lock:
            self._groups.clear()
            self._pauses.clear()
            self.replicated = self.conflicts_lost = 0

    # -- groups -------------------------------------------------------------------------------------------
    def group(self, name: str, account: str | None = None) -> Group | None:
        return self._groups.get((account or self.endpoint.account_id, name))

    def group_of(self, table: Any) -> Group | None:
        group = self._groups.get((table.account_id, table.name))
        return group if group is not None and table.region_name in group.regions else None

    def groups(self) -> list[Group]:
        return list(self._groups.values())

    def _table(self, region: str, name: str) -> Any:
        return self.endpoint.backend("dynamodb", region).tables.get(name)

    def add_replica(self, table: Any, region: str, *, backfill: bool = True) -> Group:
        """Make ``region`` a replica of ``table`` (creating the group on first use). Call with the lock held."""
        if region == table.region_name:
            raise GlobalTableError("ValidationException", f"Table {table.name} already exists in {region}: a "
                                   "replica must be in another region")
        view = (table.stream_specification or {}).get("StreamViewType")
        if table.latest_stream_label and view != "NEW_AND_OLD_IMAGES":
            raise GlobalTableError("ValidationException", "A global table needs its stream to hold "
                                   f"NEW_AND_OLD_IMAGES; table {table.name} has {view}")
        if not table.latest_stream_label:
            table.set_stream_specification({"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
        group = self.group_of(table)
        if group is None:
            group = Group(table.name, table.account_id, [table.region_name], self.endpoint.clock.time())
            self._groups[(table.account_id, table.name)] = group
            self._sync_shard(group, table.region_name, table)
        if region in group.regions:
            raise GlobalTableError("ValidationException", f"Failed to create a replica of table {table.name} in "
                                   f"{region}: a replica already exists there")
        backend = self.endpoint.backend("dynamodb", region)
        if table.name in backend.tables:
            raise GlobalTableError("ValidationException", f"Table {table.name} already exists in {region}")
        replica = backend.create_table(
            table.name, schema=table.schema, attr=table.attr,
            throughput=None if table.billing_mode == "PAY_PER_REQUEST" else {
                k: table.throughput[k] for k in ("ReadCapacityUnits", "WriteCapacityUnits")},
            billing_mode=table.billing_mode,
            indexes=[{"IndexName": i.name, "KeySchema": i.schema, "Projection": i.projection} for i in table.indexes],
            global_indexes=[{"IndexName": g.name, "KeySchema": g.schema, "Projection": g.projection,
                             **({"ProvisionedThroughput": dict(g.throughput)}
                                if g.throughput.get("ReadCapacityUnits") else {})}
                            for g in table.global_indexes],
            streams={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            sse_specification=None, tags=[], deletion_protection_enabled=False, warm_throughput=None,
        )
        replica.ttl = dict(table.ttl)
        group.regions.append(region)
        self._sync_shard(group, region, replica)
        if backfill:
            for item in table.all_items():
                attrs = item.to_json()["Attributes"]
                keys = {k: attrs[k] for k in table.table_key_attrs}
                version = group.versions.get(table.region_name, {}).get(_key(keys), (0.0, 0))
                self._apply_put(group, replica, attrs, keys, version, table.region_name)
        for other in group.regions:
            if other != region:
                src = self._table(other, table.name)
                group.cursors[(other, region)] = len(src.stream_shard.items) if src.stream_shard else 0
                group.cursors[(region, other)] = len(replica.stream_shard.items)
        logger.info("global table %s: replica added in %s (replicas: %s)", table.name, region, group.regions)
        return group

    def remove_replica(self, table: Any, region: str) -> None:
        group = self.group_of(table)
        if group is None or region not in group.regions:
            raise GlobalTableError("ValidationException", f"Table {table.name} has no replica in {region}")
        group.regions.remove(region)
        self.endpoint.backend("dynamodb", region).delete_table(table.name)
        for key in [k for k in group.cursors if region in k]:
            del group.cursors[key]
        group.versions.pop(region, None)

    def forget(self, table: Any) -> None:
        """A replica table was deleted by the user: it leaves its group."""
        group = self.group_of(table)
        if group is not None:
            group.regions.remove(table.region_name)
            for key in [k for k in group.cursors if table.region_name in k]:
                del group.cursors[key]
            if not group.regions:
                self._groups.pop((group.account, group.name), None)

    def create_legacy(self, name: str, regions: list[str]) -> Group:
        """CreateGlobalTable (2017.11.29): join existing empty tables with NEW_AND_OLD_IMAGES streams."""
        if self.group(name) is not None:
            raise GlobalTableError("GlobalTableAlreadyExistsException", f"Global table {name} already exists")
        tables = {}
        for region in regions:
            table = self._table(region, name)
            if table is None:
                raise GlobalTableError("TableNotFoundException", f"Table {name} not found in {region}")
            if (table.stream_specification or {}).get("StreamViewType") != "NEW_AND_OLD_IMAGES":
                raise GlobalTableError("ValidationException", f"Table {name} in {region} needs a stream with "
                                       "NEW_AND_OLD_IMAGES to join a global table")
            if len(table):
                raise GlobalTableError("ValidationException", f"Table {name} in {region} is not empty")
            tables[region] = table
        group = Group(name, self.endpoint.account_id, list(regions), self.endpoint.clock.time(), legacy=True)
        self._groups[(group.account, name)] = group
        for region, table in tables.items():
            self._sync_shard(group, region, table)
            for other in regions:
                if other != region:
                    group.cursors[(region, other)] = len(table.stream_shard.items)
        return group

    # -- pausing --------------------------------------------------------------------------------------------
    def pause(self, table: str | None = None, regions: Iterable[str] | None = None) -> int:
        """Stop replication to and from ``regions`` (all when None) of ``table`` (all when None) until
        ``resume(token)``."""
        token = next(self._ids)
        self._pauses[token] = (table, frozenset(regions) if regions is not None else None)
        return token

    def resume(self, token: int) -> None:
        self._pauses.pop(token, None)
        self._wake.set()

    def _paused(self, group: Group, region: str) -> bool:
        return any((t is None or t == group.name) and (r is None or region in r) for t, r in self._pauses.values())

    def _flows(self, group: Group, src: str, dst: str) -> bool:
        return not (self._paused(group, src) or self._paused(group, dst)) and \
            self.endpoint.region_up(src) and self.endpoint.region_up(dst)

    # -- replication ----------------------------------------------------------------------------------------
    def _sync_shard(self, group: Group, region: str, table: Any) -> None:
        group.shards[region] = table.stream_shard

    def _on_record(self, table: Any, record: Any, meta: RecordMeta) -> None:
        group = self.group_of(table)
        if group is None:
            return
        version: Version = self._applying if meta.replicated and self._applying else (meta.time, next(self._seq))
        record.dbdrill_version = version
        keys = record.record["dynamodb"]["Keys"]
        group.versions.setdefault(table.region_name, {})[_key(keys)] = version
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.replicate()
            except Exception:
                logger.exception("global table replication failed")

    def replicate(self) -> int:
        """Ship every due record to the replicas it can reach now; returns how many were applied."""
        applied = 0
        if not self._groups:
            return 0
        now = self.endpoint.clock.time()
        with self.endpoint.lock:
            for group in list(self._groups.values()):
                for src in list(group.regions):
                    source = self._table(src, group.name)
                    if source is None or source.stream_shard is None:
                        continue
                    for dst in list(group.regions):
                        if dst != src and self._flows(group, src, dst):
                            applied += self._ship(group, source, src, dst, now)
        return applied

    def _ship(self, group: Group, source: Any, src: str, dst: str, now: float) -> int:
        target = self._table(dst, group.name)
        if target is None:
            return 0
        items = source.stream_shard.items
        cursor = group.cursors.get((src, dst), 0)
        applied = 0
        while cursor < len(items):
            record = items[cursor]
            meta = meta_of(record)
            if meta is not None and meta.replicated:
                cursor += 1  # arrived by replication: its origin ships it to everyone
                continue
            written = meta.time if meta is not None else 0.0
            if written + self.lag > now:
                break
            version: Version = getattr(record, "dbdrill_version", (written, 0))
            self._apply(group, target, record.record, version, src)
            applied += 1
            cursor += 1
        group.cursors[(src, dst)] = cursor
        self.replicated += applied
        return applied

    def _apply(self, group: Group, target: Any, record: dict[str, Any], version: Version, origin: str) -> None:
        ddb = record["dynamodb"]
        keys = ddb["Keys"]
        current = group.versions.get(target.region_name, {}).get(_key(keys))
        if current is not None and current >= version:
            self.conflicts_lost += 1  # the replica holds a later write: last writer wins
            return
        if record["eventName"] == "REMOVE":
            self._applying = version
            try:
                with replicating(origin, version[0]):
                    target.delete_item(*_key_types(target, keys))
            finally:
                self._applying = None
            group.versions.setdefault(target.region_name, {})[_key(keys)] = version  # tombstone
        else:
            self._apply_put(group, target, ddb["NewImage"], keys, version, origin)

    def _apply_put(self, group: Group, target: Any, attrs: dict[str, Any], keys: dict[str, Any],
                   version: Version, origin: str) -> None:
        self._applying = version
        try:
            with replicating(origin, version[0]):
                target.put_item(attrs)
        finally:
            self._applying = None
        group.versions.setdefault(target.region_name, {})[_key(keys)] = version

    def caught_up(self) -> bool:
        """True when nothing is waiting to be shipped (paused or cut flows count as waiting)."""
        with self.endpoint.lock:
            for group in self._groups.values():
                for (src, _dst), cursor in group.cursors.items():
                    source = self._table(src, group.name)
                    if source is None or source.stream_shard is None:
                        continue
                    pending = [r for r in source.stream_shard.items[cursor:]
                               if not (meta_of(r) and meta_of(r).replicated)]  # type: ignore[union-attr]
                    if pending:
                        return False
        return True

    # -- TTL: one region deletes, replication carries it ---------------------------------------------------
    def sweeps(self, table: Any) -> bool:
        """Whether the TTL sweeper should sweep ``table``: plain tables yes, a global table only in the first
        of its replica regions that is up (the other replicas get the delete by replication)."""
        group = self.group_of(table)
        if group is None:
            return True
        for region in group.regions:
            if self.endpoint.region_up(region) and not self._paused(group, region):
                return region == table.region_name
        return False
