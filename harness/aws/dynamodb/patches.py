"""Patches to moto's DynamoDB models while the endpoint runs: every item write is seen (for capacity and
global tables), Query/Scan report the bytes they read before filtering, and stream records get the real
region, clock time, size, and the TTL service identity; update_item on a new item emits one INSERT, not two."""
from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.aws.dynamodb.items import Footprint, footprint, item_size, moto_attrs

logger = logging.getLogger(__name__)

# As the DynamoDB Streams API spells it; Lambda events use "type" / "principalId".
TTL_IDENTITY = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}


@dataclass
class WriteRecord:
    """One item write seen during a request: the table, the item before and after (None: absent), and
    whether a condition failed (AWS still charges capacity for it)."""

    table: Any
    old: Footprint
    new: Footprint | None
    failed: bool = False


@dataclass
class Capture:
    """What one request did to items, filled by the patched models while active on this thread."""

    writes: list[WriteRecord] = field(default_factory=list)
    reads: list[tuple[str | None, int]] = field(default_factory=list)  # (index name, bytes read)


@dataclass
class RecordMeta:
    """dbdrill's facts about one stream record: clock time of the write, the region the write came from,
    whether replication applied it, and whether the TTL service deleted it."""

    time: float
    origin: str
    replicated: bool = False
    ttl: bool = False


@dataclass
class Origin:
    """Set while replication applies a write that happened elsewhere."""

    region: str
    time: float


class _Local(threading.local):
    capture: Capture | None = None
    ttl_delete: bool = False
    origin: Origin | None = None
    update_depth: int = 0
    skip_insert: bool = False


_local = _Local()
_lock = threading.Lock()
_installed = 0
_originals: dict[tuple[type, str], Any] = {}
_clock: Callable[[], float] = time.time
StreamListener = Callable[[Any, Any, RecordMeta], None]
_listeners: list[StreamListener] = []


@contextlib.contextmanager
def capturing() -> Iterator[Capture]:
    prev, _local.capture = _local.capture, Capture()
    try:
        yield _local.capture
    finally:
        _local.capture = prev


@contextlib.contextmanager
def ttl_deleting() -> Iterator[None]:
    prev, _local.ttl_delete = _local.ttl_delete, True
    try:
        yield
    finally:
        _local.ttl_delete = prev


@contextlib.contextmanager
def replicating(region: str, at: float) -> Iterator[None]:
    prev, _local.origin = _local.origin, Origin(region, at)
    try:
        yield
    finally:
        _local.origin = prev


def add_stream_listener(cb: StreamListener) -> Callable[[], None]:
    """``cb(table, stream_record, meta)`` after every stream record (called with the moto lock held)."""
    _listeners.append(cb)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            _listeners.remove(cb)

    return remove


def meta_of(record: Any) -> RecordMeta | None:
    return getattr(record, "dbdrill", None)


def set_clock(fn: Callable[[], float]) -> None:
    global _clock
    _clock = fn


def _key_types(table: Any, attrs: dict[str, Any]) -> tuple[Any, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_value = DynamoType(attrs[table.hash_key_attr])
    range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
    return hash_value, range_value


def _put_item(orig: Callable[..., Any]) -> Callable[..., Any]:
    def put_item(self: Any, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        cap = _local.capture
        if cap is None or _local.update_depth:
            return orig(self, item_attrs, *args, **kwargs)
        try:
            current = self.get_item(*_key_types(self, item_attrs))
        except Exception:
            current = None
        old = footprint(self, moto_attrs(current))
        try:
            item = orig(self, item_attrs, *args, **kwargs)
        except Exception as exc:
            if type(exc).__name__ == "ConditionalCheckFailed":
                cap.writes.append(WriteRecord(self, old, footprint(self, item_attrs), failed=True))
            raise
        cap.writes.append(WriteRecord(self, old, footprint(self, moto_attrs(item))))
        return item

    return put_item


def _delete_item(orig: Callable[..., Any]) -> Callable[..., Any]:
    def delete_item(self: Any, hash_key: Any, range_key: Any = None) -> Any:
        item = orig(self, hash_key, range_key)
        cap = _local.capture
        if cap is not None and not _local.update_depth:
            cap.writes.append(WriteRecord(self, footprint(self, moto_attrs(item)), footprint(self, None)))
        return item

    return delete_item


def _update_item(orig: Callable[..., Any]) -> Callable[..., Any]:
    def update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        table = self.get_table(table_name)
        try:
            current = table.get_item(*_key_types(table, key)) if table.hash_key_attr in key else None
        except Exception:
            current = None
        old = footprint(table, moto_attrs(current))
        cap = _local.capture
        _local.update_depth += 1
        _local.skip_insert = current is None
        try:
            item = orig(self, table_name, key, *args, **kwargs)
        except Exception as exc:
            if cap is not None and type(exc).__name__ == "ConditionalCheckFailed":
                cap.writes.append(WriteRecord(table, old, old, failed=True))
            raise
        finally:
            _local.update_depth -= 1
            _local.skip_insert = False
        if cap is not None:
            cap.writes.append(WriteRecord(table, old, footprint(table, moto_attrs(item))))
        return item

    return update_item


def _read_op(orig: Callable[..., Any], filter_arg: str, projection_arg: str) -> Callable[..., Any]:
    sig = inspect.signature(orig)

    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        cap = _local.capture
        if cap is None:
            return orig(self, *args, **kwargs)
        bound = sig.bind(self, *args, **kwargs)
        filter_op = bound.arguments.get(filter_arg)
        projection = bound.arguments.get(projection_arg)
        bound.arguments[filter_arg] = None
        bound.arguments[projection_arg] = None
        results, scanned, last_key = orig(*bound.args, **bound.kwargs)
        # Capacity counts every item read before the filter, at its (index-projected) size.
        cap.reads.append((bound.arguments.get("index_name"), sum(item_size(moto_attrs(r)) for r in results)))
        if filter_op is not None:
            results = [r for r in results if filter_op.expr(r)]
        if projection:
            results = [r.project(projection) for r in results]
        return results, scanned, last_key

    return read


def _stream_add(self: Any, old: Any, new: Any) -> None:
    from moto.dynamodb.models.table import StreamRecord

    if _local.update_depth and _local.skip_insert and old is None:
        # update_item on a missing item first puts the bare key, then reports the update: keep only the latter.
        _local.skip_insert = False
        return
    view = self.table.stream_specification["StreamViewType"]
    event = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
    seq = len(self.items) + self.starting_sequence_number
    rec = StreamRecord(self.table, view, event, old, new, seq)
    origin = _local.origin
    meta = RecordMeta(time=origin.time if origin else _clock(), origin=origin.region if origin else
                      self.table.region_name, replicated=origin is not None,
                      ttl=_local.ttl_delete and event == "REMOVE")
    body = rec.record
    body["awsRegion"] = self.table.region_name
    ddb = body["dynamodb"]
    ddb["ApproximateCreationDateTime"] = int(_clock())
    ddb["SizeBytes"] = sum(item_size(ddb.get(k)) for k in ("Keys", "NewImage", "OldImage"))
    if meta.ttl:
        body["userIdentity"] = dict(TTL_IDENTITY)
    rec.dbdrill = meta  # type: ignore[attr-defined]
    self.items.append(rec)
    for cb in list(_listeners):
        try:
            cb(self.table, rec, meta)
        except Exception:
            logger.exception("stream listener failed")


def install() -> None:
    """Patch moto (counted: the last ``uninstall`` restores it)."""
    global _installed
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard, Table

    with _lock:
        _installed += 1
        if _installed > 1:
            return
        patches: list[tuple[type, str, Any]] = [
            (Table, "put_item", _put_item(Table.put_item)),
            (Table, "delete_item", _delete_item(Table.delete_item)),
            (DynamoDBBackend, "update_item", _update_item(DynamoDBBackend.update_item)),
            (Table, "query", _read_op(Table.query, "filter_expression", "projection_expressions")),
            (Table, "scan", _read_op(Table.scan, "filter_expression", "projection_expression")),
            (StreamShard, "add", _stream_add),
        ]
        for cls, name, new in patches:
            _originals[(cls, name)] = cls.__dict__[name]
            setattr(cls, name, new)


def uninstall() -> None:
    global _installed
    with _lock:
        if _installed == 0:
            return
        _installed -= 1
        if _installed:
            return
        for (cls, name), orig in _originals.items():
            setattr(cls, name, orig)
        _originals.clear()
