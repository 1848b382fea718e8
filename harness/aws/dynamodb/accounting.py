"""Capacity accounting per DynamoDB operation: what a request will cost (checked before moto runs, so a
throttled write changes nothing), what it did cost (charged after), batch items left unprocessed as AWS does,
transactions cancelled with ThrottlingError, and ConsumedCapacity answers that match the meters."""
from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any, cast

from harness.aws.dynamodb.capacity import CapacityModel, Demand
from harness.aws.dynamodb.items import (
    Footprint,
    footprint,
    index_write_units,
    item_size,
    moto_attrs,
    partition_of,
    read_units,
    write_units,
)
from harness.aws.dynamodb.patches import Capture, WriteRecord, _key_types, capturing
from harness.aws.middleware import Call
from harness.aws.server import HttpResponse
from harness.aws.wire import error_response, json_response, service_spec

THROTTLING_REASON = ("Throughput exceeds the current capacity of your table or index. DynamoDB is automatically "
                     "scaling your table or index so please try again shortly.")

Handler = Callable[[Call, dict[str, Any], Any], HttpResponse]


def throttle_response(message: str, reasons: list[dict[str, str]] | None = None) -> HttpResponse:
    """ProvisionedThroughputExceededException with its ThrottlingReasons (what was throttled, and why)."""
    if not reasons:
        return error_response("json", "ProvisionedThroughputExceededException", message, 400,
                              spec=service_spec("dynamodb"))
    return json_response(400, {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                               "message": message, "ThrottlingReasons": reasons}, crc32=True)


def _table(backend: Any, name: Any) -> Any:
    if not isinstance(name, str):
        return None
    return backend.tables.get(name)


def _lookup(table: Any, key: Any) -> dict[str, Any] | None:
    try:
        return moto_attrs(table.get_item(*_key_types(table, key)))
    except Exception:
        return None


def write_demands(table: Any, old: Footprint, new: Footprint | None, *, factor: int = 1,
                  failed: bool = False, partition: str | None = None) -> list[Demand]:
    """Cost of one item write: 1 KB units of the larger of the item before and after, plus each LSI's and
    (unless a condition failed) each GSI's index writes. The table's and LSIs' units count against the item's
    partition (``partition``, else the one its footprints carry)."""
    new_size = new.size if new is not None else 0
    pk = partition or old.partition or (new.partition if new is not None else None)
    out = [Demand(table, None, "write", float(write_units(max(old.size, new_size)) * factor), partition=pk)]
    if failed:
        return out
    for name, entry in old.lsi.items():
        units = index_write_units(entry, new.lsi.get(name) if new else None)
        if units:
            out.append(Demand(table, None, "write", float(units * factor), lsi=name, partition=pk))
    for name, entry in old.gsi.items():
        units = index_write_units(entry, new.gsi.get(name) if new else None)
        if units:
            out.append(Demand(table, name, "write", float(units * factor)))
    return out


def _captured_writes(records: list[WriteRecord], factor: int = 1) -> list[Demand]:
    out: list[Demand] = []
    for r in records:
        out += write_demands(r.table, r.old, r.new, factor=factor, failed=r.failed)
    return out


def _charged(response: HttpResponse) -> bool:
    """AWS charges successful requests and failed conditions (which still read / write the item)."""
    return response.status == 200 or (response.status == 400 and b"ConditionalCheckFailed" in response.body)


def consumed_capacity(demands: list[Demand], mode: str) -> list[dict[str, Any]]:
    """The ConsumedCapacity entries (one per table) for ``demands`` in mode TOTAL or INDEXES."""
    tables: dict[str, dict[str, Any]] = {}
    for d in demands:
        entry = tables.setdefault(d.table.name, {"read": 0.0, "write": 0.0, "table": {}, "gsi": {}, "lsi": {}})
        entry[d.kind] += d.units
        part = entry["lsi"] if d.lsi else entry["gsi"] if d.index else entry["table"]
        name = d.lsi or d.index or "table"
        part.setdefault(name, {"read": 0.0, "write": 0.0})[d.kind] += d.units

    def units(r: float, w: float) -> dict[str, float]:
        out = {"CapacityUnits": r + w}
        if r:
            out["ReadCapacityUnits"] = r
        if w:
            out["WriteCapacityUnits"] = w
        return out

    result = []
    for name, entry in tables.items():
        item: dict[str, Any] = {"TableName": name, **units(entry["read"], entry["write"])}
        if mode == "INDEXES":
            t = entry["table"].get("table", {"read": 0.0, "write": 0.0})
            item["Table"] = units(t["read"], t["write"])
            for key, field in (("gsi", "GlobalSecondaryIndexes"), ("lsi", "LocalSecondaryIndexes")):
                if entry[key]:
                    item[field] = {n: units(v["read"], v["write"]) for n, v in entry[key].items()}
        result.append(item)
    return result


def _rewrite(response: HttpResponse, changes: Callable[[dict[str, Any]], None]) -> HttpResponse:
    try:
        payload = json.loads(response.body or b"{}")
    except ValueError:
        return response
    changes(payload)
    body = json.dumps(payload, separators=(",", ":")).encode()
    response.body = body
    response.set_header("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF))
    return response


class Accounting:
    """Runs DynamoDB data-plane requests through the capacity meters."""

    def __init__(self, model: CapacityModel) -> None:
        self.model = model
        self._handlers: dict[str, Handler] = {
            "GetItem": self._get_item, "PutItem": self._put_item, "UpdateItem": self._update_item,
            "DeleteItem": self._delete_item, "Query": self._query, "Scan": self._query,
            "BatchGetItem": self._batch_get, "BatchWriteItem": self._batch_write,
            "TransactGetItems": self._transact_get, "TransactWriteItems": self._transact_write,
            "ExecuteStatement": self._partiql, "BatchExecuteStatement": self._partiql,
            "ExecuteTransaction": self._partiql,
        }

    def handles(self, op: str) -> bool:
        return op in self._handlers

    def handle(self, call: Call, op: str, body: dict[str, Any], backend: Any) -> HttpResponse:
        with call.app.lock:
            return self._handlers[op](call, body, backend)

    # -- single-item and query operations ------------------------------------------------------------
    def _single(self, call: Call, body: dict[str, Any], pre: list[Demand],
                post: Callable[[Capture], list[Demand]] | None = None) -> HttpResponse:
        """``pre`` is what the request is admitted on; ``post`` (from what moto did) what it is charged, when
        the price is not known beforehand."""
        refusal = self.model.refusal(pre)
        if refusal:
            return throttle_response(*refusal)
        if post is None:
            response = call.forward()
        else:
            with capturing() as cap:
                response = call.forward()
        if not _charged(response):
            return response
        demands = post(cap) if post is not None else pre
        if response.status != 200:  # a failed condition costs the table, not its indexes (nothing was written)
            demands = [d for d in demands if d.index is None and d.lsi is None]
        self.model.charge(demands)
        mode = body.get("ReturnConsumedCapacity", "NONE")
        if mode in ("TOTAL", "INDEXES") and response.status == 200:
            entries = consumed_capacity(demands, mode)
            return _rewrite(response, lambda p: p.__setitem__("ConsumedCapacity", entries[0] if entries else {}))
        return response

    def _get_item(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        table = _table(backend, body.get("TableName"))
        if table is None:
            return call.forward()
        key = body.get("Key", {})
        units = read_units(item_size(_lookup(table, key)), consistent=bool(body.get("ConsistentRead")))
        return self._single(call, body, [Demand(table, None, "read", units, partition=partition_of(table, key))])

    def _write(self, call: Call, body: dict[str, Any], backend: Any, new_of: Callable[[Any, Footprint],
               Footprint | None], key_of: Callable[[dict[str, Any]], Any], *, exact: bool) -> HttpResponse:
        table = _table(backend, body.get("TableName"))
        if table is None:
            return call.forward()
        key = key_of(body)
        old = footprint(table, _lookup(table, key))
        pre = write_demands(table, old, new_of(table, old), partition=partition_of(table, key))
        if exact:  # the item before and after are known now: the price is too (a failed condition included)
            return self._single(call, body, pre)
        return self._single(call, body, pre, lambda cap: _captured_writes(cap.writes) or pre)

    def _put_item(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        return self._write(call, body, backend, lambda t, old: footprint(t, body.get("Item")),
                           lambda b: b.get("Item", {}), exact=True)

    def _update_item(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        # The size after an update is known only once it ran: admit on the current size, charge the real one.
        return self._write(call, body, backend, lambda t, old: old, lambda b: b.get("Key", {}), exact=False)

    def _delete_item(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        return self._write(call, body, backend, lambda t, old: None, lambda b: b.get("Key", {}), exact=True)

    def _query(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        table = _table(backend, body.get("TableName"))
        if table is None:
            return call.forward()
        index = body.get("IndexName")
        gsi = index if index in {g.name for g in table.global_indexes} else None
        lsi = index if index and gsi is None else None
        consistent = bool(body.get("ConsistentRead"))
        pre = [Demand(table, gsi, "read", read_units(0, consistent=consistent), lsi=lsi)]

        def post(cap: Capture) -> list[Demand]:
            size = sum(n for _, n in cap.reads)
            return [Demand(table, gsi, "read", read_units(size, consistent=consistent), lsi=lsi)]

        return self._single(call, body, pre, post)

    # -- batches: throttled items come back unprocessed ---------------------------------------------
    def _batch(self, call: Call, body: dict[str, Any], backend: Any, kind: str) -> HttpResponse:
        requested = body.get("RequestItems") or {}
        admitted: dict[str, Any] = {}
        unprocessed: dict[str, Any] = {}
        pending: list[Demand] = []
        first_refused: list[Demand] = []
        for name, spec in requested.items():
            table = _table(backend, name)
            if table is None or not isinstance(spec, dict if kind == "read" else list):
                return call.forward()
            spec = cast(Any, spec)
            entries = spec.get("Keys", []) if kind == "read" else spec
            for entry in entries:
                demands = self._batch_entry(table, spec, entry, kind)
                if self.model.fits(pending + demands):
                    pending += demands
                    target = admitted
                else:
                    target = unprocessed
                    first_refused = first_refused or demands
                if kind == "read":
                    target.setdefault(name, {**spec, "Keys": []})["Keys"].append(entry)
                else:
                    target.setdefault(name, []).append(entry)
        if requested and not admitted:
            return throttle_response(*(self.model.refusal(first_refused) or ("Throughput exceeded", [])))
        forward_body = None if not unprocessed else json.dumps({**body, "RequestItems": admitted}).encode()
        with capturing() as cap:
            response = call.forward(forward_body)
        if response.status != 200:
            return response
        demands = pending if kind == "read" else _captured_writes(cap.writes)
        self.model.charge(demands)
        mode = body.get("ReturnConsumedCapacity", "NONE")
        field = "UnprocessedKeys" if kind == "read" else "UnprocessedItems"

        def change(payload: dict[str, Any]) -> None:
            left = payload.setdefault(field, {})
            for name, value in unprocessed.items():
                if kind == "read":
                    left.setdefault(name, {**value, "Keys": []})["Keys"].extend(value["Keys"])
                else:
                    left.setdefault(name, []).extend(value)
            if mode in ("TOTAL", "INDEXES"):
                payload["ConsumedCapacity"] = consumed_capacity(demands, mode)

        if unprocessed or mode in ("TOTAL", "INDEXES"):
            return _rewrite(response, change)
        return response

    def _batch_entry(self, table: Any, spec: Any, entry: dict[str, Any], kind: str) -> list[Demand]:
        if kind == "read":
            size = item_size(_lookup(table, entry))
            return [Demand(table, None, "read", read_units(size, consistent=bool(spec.get("ConsistentRead"))),
                           partition=partition_of(table, entry))]
        if "PutRequest" in entry:
            item = entry["PutRequest"].get("Item", {})
            return write_demands(table, footprint(table, _lookup(table, item)), footprint(table, item))
        key = entry.get("DeleteRequest", {}).get("Key", {})
        return write_demands(table, footprint(table, _lookup(table, key)), None, partition=partition_of(table, key))

    def _batch_get(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        return self._batch(call, body, backend, "read")

    def _batch_write(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        return self._batch(call, body, backend, "write")

    # -- transactions: all or nothing ------------------------------------------------------------------
    def _transact_get(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        return self._transact(call, body, backend, write=False)

    def _transact_write(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        return self._transact(call, body, backend, write=True)

    def _transact(self, call: Call, body: dict[str, Any], backend: Any, *, write: bool) -> HttpResponse:
        items = body.get("TransactItems") or []
        per_item: list[list[Demand]] = []
        checks: list[Demand] = []
        for entry in items:
            if not isinstance(entry, dict) or len(entry) != 1:
                return call.forward()
            ((action, spec),) = entry.items()
            table = _table(backend, spec.get("TableName") if isinstance(spec, dict) else None)
            if table is None:
                return call.forward()
            key = spec.get("Item") if action == "Put" else spec.get("Key", {})
            old = footprint(table, _lookup(table, key))
            if action == "Get":
                demands = [Demand(table, None, "read", read_units(old.size, transactional=True),
                                  partition=partition_of(table, key))]
            elif action == "Put":
                demands = write_demands(table, old, footprint(table, spec.get("Item")), factor=2)
            elif action == "Delete":
                demands = write_demands(table, old, None, factor=2, partition=partition_of(table, key))
            else:  # Update (admitted on the current size) and ConditionCheck
                demands = write_demands(table, old, old, factor=2, partition=partition_of(table, key))
                if action == "ConditionCheck":
                    checks += demands
            per_item.append(demands)
        refused = self.model.refused([d for ds in per_item for d in ds])
        if refused:
            def hit(d: Demand) -> bool:
                return any(r.table is d.table and r.kind == d.kind and (
                    r.partition == d.partition if r.partition is not None else r.index == d.index) for r in refused)

            reasons = [{"Code": "ThrottlingError", "Message": THROTTLING_REASON} if any(hit(d) for d in ds)
                       else {"Code": "None"} for ds in per_item]
            codes = ", ".join(r["Code"] for r in reasons)
            return json_response(400, {
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
                "CancellationReasons": reasons}, crc32=True)
        with capturing() as cap:
            response = call.forward()
        if response.status != 200:
            return response
        demands = _captured_writes(cap.writes, factor=2) + checks if write else [d for ds in per_item for d in ds]
        self.model.charge(demands)
        mode = body.get("ReturnConsumedCapacity", "NONE")
        if mode in ("TOTAL", "INDEXES"):
            return _rewrite(response, lambda p: p.__setitem__("ConsumedCapacity", consumed_capacity(demands, mode)))
        return response

    def _partiql(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        # PartiQL is charged for the writes it made (no admission check: its cost is known only afterwards).
        with capturing() as cap:
            response = call.forward()
        if response.status == 200:
            self.model.charge(_captured_writes(cap.writes))
        return response
