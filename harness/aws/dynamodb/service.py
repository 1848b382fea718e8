"""The DynamoDB behaviours moto lacks, wired into the request pipeline: capacity, TTL (sweeper and the
UpdateTimeToLive rules), stream handlers and global tables (UpdateTable ReplicaUpdates, CreateGlobalTable,
DescribeGlobalTable, Replicas in DescribeTable)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from harness.aws.dynamodb.accounting import Accounting
from harness.aws.dynamodb.capacity import CapacityModel
from harness.aws.dynamodb.global_tables import GlobalTableError, GlobalTables, Group
from harness.aws.dynamodb.patches import add_stream_listener
from harness.aws.dynamodb.streams import EndpointLike, StreamMapping, StreamMappings
from harness.aws.dynamodb.ttl import TtlSweeper
from harness.aws.middleware import Call
from harness.aws.server import HttpResponse
from harness.aws.wire import RequestInfo, error_response, json_response, service_spec

logger = logging.getLogger(__name__)

TARGET_PREFIX = "DynamoDB_20120810"
GLOBAL_TABLE_VERSION = "2019.11.21"


def _error(code: str, message: str, status: int = 400) -> HttpResponse:
    return error_response("json", code, message, status, spec=service_spec("dynamodb"))


def _dump(payload: dict[str, Any]) -> dict[str, Any]:
    from moto.dynamodb.models.utilities import dynamo_json_dump

    out: dict[str, Any] = json.loads(dynamo_json_dump(payload))
    return out


class DynamoDBBehaviours:
    """Everything dbdrill adds to moto's DynamoDB; one per endpoint."""

    def __init__(self, endpoint: EndpointLike, *, capacity: bool = True, ttl_delay: float = 0.0,
                 replication_lag: float = 0.0, known_regions: tuple[str, ...] = ()) -> None:
        self.endpoint = endpoint
        self.known_regions = known_regions
        self.capacity_default = capacity
        self.capacity = CapacityModel(endpoint.clock, enabled=capacity)
        self.accounting = Accounting(self.capacity)
        self.streams = StreamMappings(endpoint)
        self.global_tables = GlobalTables(endpoint, lag=replication_lag)
        self.ttl = TtlSweeper(endpoint.clock, endpoint.lock, delay=ttl_delay, owner=self.global_tables.sweeps)
        self._remove_listener: Callable[[], None] | None = None

    def start(self) -> DynamoDBBehaviours:
        self._remove_listener = add_stream_listener(lambda table, record, meta: self.streams.wake())
        self.ttl.start()
        self.global_tables.start()
        return self

    def stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
        self.streams.stop()
        self.ttl.stop()
        self.global_tables.stop()

    def reset(self) -> None:
        self.streams.reset()
        self.capacity.reset()
        self.capacity.enabled = self.capacity_default
        self.ttl.reset()
        self.global_tables.reset()

    def subscribe(self, table: str, handler: Callable[..., Any], *, region: str, **options: Any) -> StreamMapping:
        return self.streams.subscribe(table, handler, region=region, **options)

    # -- the interceptor --------------------------------------------------------------------------------
    def applies(self, info: RequestInfo) -> bool:
        return info.target_prefix == TARGET_PREFIX

    def __call__(self, call: Call) -> HttpResponse:
        op = call.info.operation or ""
        try:
            body = json.loads(call.request.body or b"{}")
        except ValueError:
            return call.forward()
        if not isinstance(body, dict):
            return call.forward()
        backend = self.endpoint.backend("dynamodb", call.info.region or "us-east-1")
        if self.accounting.handles(op):
            return self.accounting.handle(call, op, body, backend)
        handler = {
            "UpdateTimeToLive": self._update_ttl, "UpdateTable": self._update_table,
            "DescribeTable": self._describe_table, "DeleteTable": self._delete_table,
            "CreateGlobalTable": self._create_global_table, "DescribeGlobalTable": self._describe_global_table,
        }.get(op)
        if handler is None:
            return call.forward()
        with self.endpoint.lock:
            try:
                return handler(call, body, backend)
            except GlobalTableError as exc:
                return _error(exc.code, str(exc))

    def _update_ttl(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        table = backend.tables.get(body.get("TableName"))
        if table is None:
            return call.forward()
        message = self.ttl.check_update(table, body.get("TimeToLiveSpecification") or {})
        if message:
            return _error("ValidationException", message)
        response = call.forward()
        if response.status == 200:
            self.ttl.record_update(table)
            group = self.global_tables.group_of(table)
            for region in group.regions if group else []:
                replica = self.endpoint.backend("dynamodb", region).tables.get(table.name)
                if replica is not None and replica is not table:
                    replica.ttl = dict(table.ttl)
                    self.ttl.record_update(replica)
        return response

    def _replicas(self, group: Group, region: str) -> list[dict[str, Any]]:
        return [{"RegionName": r, "ReplicaStatus": "ACTIVE"} for r in group.regions if r != region]

    def _decorate(self, response: HttpResponse, table: Any, key: str) -> HttpResponse:
        group = self.global_tables.group_of(table)
        if group is None or response.status != 200:
            return response
        payload = json.loads(response.body)
        desc = payload.get(key, {})
        desc["Replicas"] = self._replicas(group, table.region_name)
        desc["GlobalTableVersion"] = "2017.11.29" if group.legacy else GLOBAL_TABLE_VERSION
        return json_response(200, payload, crc32=True)

    def _describe_table(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        response = call.forward()
        table = backend.tables.get(body.get("TableName"))
        return self._decorate(response, table, "Table") if table is not None else response

    def _update_table(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        updates = body.get("ReplicaUpdates")
        if not updates:
            response = call.forward()
            table = backend.tables.get(body.get("TableName"))
            return self._decorate(response, table, "TableDescription") if table is not None else response
        table = backend.tables.get(body.get("TableName"))
        if table is None:
            return _error("ResourceNotFoundException", f"Requested resource not found: Table: "
                          f"{body.get('TableName')} not found")
        for update in updates:
            ((action, spec),) = update.items()
            region = spec.get("RegionName", "")
            if self.known_regions and region not in self.known_regions:
                raise GlobalTableError("ValidationException", f"Region {region!r} is not emulated: replicas can "
                                       f"be made in {', '.join(self.known_regions)} (--dbdrill-regions)")
            if action == "Create":
                self.global_tables.add_replica(table, region)
            elif action == "Delete":
                self.global_tables.remove_replica(table, region)
        rest = {k: v for k, v in body.items() if k not in ("ReplicaUpdates", "TableName")}
        if rest:
            response = call.forward(json.dumps({k: v for k, v in body.items() if k != "ReplicaUpdates"}).encode())
        else:
            response = json_response(200, _dump(table.describe(base_key="TableDescription")), crc32=True)
        return self._decorate(response, table, "TableDescription")

    def _delete_table(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        table = backend.tables.get(body.get("TableName"))
        response = call.forward()
        if table is not None and response.status == 200:
            self.capacity.forget(table)
            self.global_tables.forget(table)
        return response

    def _global_description(self, group: Group) -> dict[str, Any]:
        return {"GlobalTableDescription": {
            "ReplicationGroup": [{"RegionName": r} for r in group.regions],
            "GlobalTableArn": f"arn:aws:dynamodb::{group.account}:global-table/{group.name}",
            "CreationDateTime": group.created, "GlobalTableStatus": "ACTIVE", "GlobalTableName": group.name}}

    def _create_global_table(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        regions = [r.get("RegionName", "") for r in body.get("ReplicationGroup") or []]
        group = self.global_tables.create_legacy(body.get("GlobalTableName", ""), regions)
        return json_response(200, self._global_description(group), crc32=True)

    def _describe_global_table(self, call: Call, body: dict[str, Any], backend: Any) -> HttpResponse:
        group = self.global_tables.group(body.get("GlobalTableName", ""))
        if group is None:
            return _error("GlobalTableNotFoundException", f"Global table not found: {body.get('GlobalTableName')}")
        return json_response(200, self._global_description(group), crc32=True)
