"""DynamoDB Streams -> Python handlers, as a Lambda event source mapping does it: batches of records in order
(``{"Records": [...]}``, eventSource aws:dynamodb, eventSourceARN), a failed batch retried (bisected on error
if asked) until it succeeds, runs out of retries or ages out, then sent to an on-failure SQS queue in
Lambda's message shape. Runs in-process off moto's stream shard; never creates moto Lambda mappings."""
from __future__ import annotations

import copy
import datetime as dt
import inspect
import itertools
import json
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.clock import Clock
from harness.errors import HarnessError
from harness.wait import wait_until

logger = logging.getLogger(__name__)

RECORD_RETENTION = 24 * 3600.0


class EndpointLike(Protocol):
    lock: threading.RLock
    clock: Clock
    account_id: str

    def region_up(self, region: str) -> bool: ...

    def backend(self, service: str, region: str | None = None) -> Any: ...


@dataclass
class LambdaContext:
    """The bits of Lambda's context object handlers commonly read."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    memory_limit_in_mb: int = 128

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _wire(record: dict[str, Any]) -> dict[str, Any]:
    """A stream record as Lambda delivers it (JSON types, binaries base64)."""
    from moto.dynamodb.models.utilities import dynamo_json_dump

    out: dict[str, Any] = json.loads(dynamo_json_dump(record))
    identity = out.get("userIdentity")
    if identity:  # GetRecords says Type/PrincipalId, Lambda events type/principalId
        out["userIdentity"] = {"type": identity.get("Type"), "principalId": identity.get("PrincipalId")}
    return out


class StreamMapping:
    """One table stream feeding one handler. Start with ``start()``; ``wait_caught_up()`` in tests."""

    def __init__(self, endpoint: EndpointLike, table: str, handler: Callable[..., Any], *, region: str,
                 batch_size: int = 100, bisect_on_error: bool = False, max_retries: int = -1,
                 max_record_age: float = -1, on_failure: str | None = None,
                 starting_position: str = "TRIM_HORIZON", function_name: str = "dbdrill-stream-handler",
                 poll_interval: float = 0.02, retry_delay: float = 0.05) -> None:
        if not 1 <= batch_size <= 10000:
            raise HarnessError(f"batch_size must be 1..10000 (Lambda's limits), got {batch_size}")
        if starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise HarnessError(f"starting_position must be TRIM_HORIZON or LATEST, got {starting_position!r}")
        if max_retries < -1 or max_retries > 10000:
            raise HarnessError(f"max_retries must be -1 (until the record expires) .. 10000, got {max_retries}")
        self.endpoint = endpoint
        self.table_name = table
        self.region = region
        self.handler = handler
        self.batch_size = batch_size
        self.bisect_on_error = bisect_on_error
        self.max_retries = max_retries
        self.max_record_age = max_record_age
        self.on_failure = on_failure
        self.function_name = function_name
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.uuid = str(uuid.uuid4())
        self.batches: list[int] = []  # sizes of the batches handed to the handler, failed ones included
        self.delivered = 0
        self.failed_invocations = 0
        self.sent_to_failure = 0
        self.errors: deque[BaseException] = deque(maxlen=100)  # the latest handler errors
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._position = 0
        self._shard: Any = None
        self._busy = False
        self._cond = threading.Condition()
        self._takes_context = len(inspect.signature(handler).parameters) >= 2
        shard = self._table_shard()
        if shard is None:
            raise HarnessError(f"table {table!r} in {region} has no stream: create it with StreamSpecification="
                               "{'StreamEnabled': True, 'StreamViewType': 'NEW_AND_OLD_IMAGES'} (or update_table)")
        self._shard = shard
        self._position = len(shard.items) if starting_position == "LATEST" else 0

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.endpoint.account_id}:function:{self.function_name}"

    def _table(self) -> Any:
        backend = self.endpoint.backend("dynamodb", self.region)
        table = backend.tables.get(self.table_name)
        if table is None:
            raise HarnessError(f"table {self.table_name!r} does not exist in {self.region}: create it first "
                               f"(tables there: {', '.join(sorted(backend.tables)) or 'none'})")
        return table

    def _table_shard(self) -> Any:
        with self.endpoint.lock:
            return self._table().stream_shard

    def start(self) -> StreamMapping:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"dbdrill-esm-{self.table_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._thread = None

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        """Records in the stream not yet handled (delivered or given up on)."""
        with self.endpoint.lock:
            shard = self._shard
            return (len(shard.items) - self._position) if shard is not None else 0

    def wait_caught_up(self, timeout: float = 10.0) -> None:
        """Block until every record written so far has been handled (deadline-bound)."""
        with self.endpoint.lock:
            target = len(self._shard.items) if self._shard is not None else 0
        wait_until(lambda: self._position >= target and not self._busy, timeout,
                   what=f"stream mapping on {self.table_name} ({self.region}) to catch up to record {target}")

    # -- the poller ---------------------------------------------------------------------------------
    def _run(self) -> None:
        problem: str | None = None
        for _ in itertools.count():
            if self._stop.is_set():
                return
            try:
                batch = self._next_batch()
                problem = None
            except HarnessError as exc:
                if str(exc) != problem:  # say it once, then keep polling slowly (the table may come back)
                    logger.warning("stream mapping %s: %s", self.table_name, exc)
                problem, batch = str(exc), []
            if not batch:
                with self._cond:
                    self._cond.wait(0.5 if problem else self.poll_interval)
                continue
            self._busy = True
            try:
                self._process(batch)
            finally:
                with self.endpoint.lock:
                    self._position += len(batch)
                self._busy = False

    def _next_batch(self) -> list[tuple[Any, dict[str, Any]]]:
        if not self.endpoint.region_up(self.region):
            return []  # the region is down: so is its Lambda poller
        with self.endpoint.lock:
            table = self._table()
            shard = table.stream_shard
            if shard is None:
                return []
            if shard is not self._shard:  # stream re-enabled: a new shard starts at its beginning
                self._shard, self._position = shard, 0
            records = shard.items[self._position:self._position + self.batch_size]
            arn = f"{table.table_arn}/stream/{table.latest_stream_label}"
            out = []
            for rec in records:
                event = copy.deepcopy(rec.to_json())
                event["eventSourceARN"] = arn
                out.append((rec, event))
        return [(rec, _wire(event)) for rec, event in out]

    def _record_age(self, batch: list[tuple[Any, dict[str, Any]]]) -> float:
        first = batch[0][1]["dynamodb"].get("ApproximateCreationDateTime", self.endpoint.clock.time())
        return self.endpoint.clock.time() - float(first)

    def _invoke(self, batch: list[tuple[Any, dict[str, Any]]]) -> None:
        event = {"Records": [e for _, e in batch]}
        self.batches.append(len(batch))
        if self._takes_context:
            self.handler(event, LambdaContext(self.function_name, invoked_function_arn=self.function_arn))
        else:
            self.handler(event)

    def _process(self, batch: list[tuple[Any, dict[str, Any]]]) -> None:
        attempts = 0
        for _ in itertools.count():
            if self._stop.is_set():
                return
            try:
                self._invoke(batch)
                self.delivered += len(batch)
                return
            except Exception as exc:
                attempts += 1
                self.failed_invocations += 1
                self.errors.append(exc)
                logger.info("stream handler failed on %d record(s) (attempt %d): %r", len(batch), attempts, exc)
            if self.bisect_on_error and len(batch) > 1:
                half = len(batch) // 2
                self._process(batch[:half])
                self._process(batch[half:])
                return
            age = self._record_age(batch)
            out_of_retries = self.max_retries >= 0 and attempts > self.max_retries
            too_old = (self.max_record_age >= 0 and age > self.max_record_age) or age > RECORD_RETENTION
            if out_of_retries or too_old:
                self._give_up(batch, attempts, "RetryAttemptsExhausted" if out_of_retries else
                              "RecordAgeExceeded")
                return
            self._stop.wait(min(self.retry_delay * 2 ** min(attempts - 1, 6), 1.0))

    def _give_up(self, batch: list[tuple[Any, dict[str, Any]]], attempts: int, condition: str) -> None:
        logger.warning("stream mapping %s: giving up on %d record(s): %s", self.table_name, len(batch), condition)
        if self.on_failure is None:
            return
        first, last = batch[0][1], batch[-1][1]
        message = {
            "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": self.function_arn,
                               "condition": condition, "approximateInvokeCount": attempts},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": _iso(self.endpoint.clock.time()),
            "DDBStreamBatchInfo": {
                "shardId": self._shard.id if self._shard is not None else "",
                "startSequenceNumber": first["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": last["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(float(first["dynamodb"]["ApproximateCreationDateTime"])),
                "approximateArrivalOfLastRecord": _iso(float(last["dynamodb"]["ApproximateCreationDateTime"])),
                "batchSize": len(batch),
                "streamArn": first["eventSourceARN"],
            },
        }
        region, queue = self._queue()
        with self.endpoint.lock:
            self.endpoint.backend("sqs", region).send_message(queue, json.dumps(message))
        self.sent_to_failure += 1

    def _queue(self) -> tuple[str, str]:
        """(region, queue name) of the on-failure destination: an SQS queue URL or ARN."""
        dest = self.on_failure or ""
        if dest.startswith("arn:"):
            parts = dest.split(":")
            return parts[3], parts[5]
        name = dest.rstrip("/").rsplit("/", 1)[-1]
        host = dest.split("/")[2] if "//" in dest else ""
        region = host.split(".")[1] if host.startswith("sqs.") and host.count(".") >= 2 else self.region
        return region, name


class StreamMappings:
    """Every mapping of an endpoint: made by ``subscribe``, stopped by ``reset``/``stop``."""

    def __init__(self, endpoint: EndpointLike) -> None:
        self.endpoint = endpoint
        self._mappings: list[StreamMapping] = []
        self._lock = threading.Lock()

    def subscribe(self, table: str, handler: Callable[..., Any], *, region: str, **options: Any) -> StreamMapping:
        mapping = StreamMapping(self.endpoint, table, handler, region=region, **options)
        if mapping.on_failure is not None:
            dest_region, queue = mapping._queue()
            with self.endpoint.lock:
                queues = self.endpoint.backend("sqs", dest_region).queues
                if queue not in queues:
                    raise HarnessError(f"on-failure queue {queue!r} does not exist in {dest_region}: create it "
                                       "first (sqs.create_queue) and pass its QueueUrl or ARN")
        with self._lock:
            self._mappings.append(mapping)
        return mapping.start()

    def wake(self) -> None:
        with self._lock:
            mappings = list(self._mappings)
        for m in mappings:
            m.wake()

    def all(self) -> list[StreamMapping]:
        with self._lock:
            return list(self._mappings)

    def stop(self) -> None:
        with self._lock:
            mappings, self._mappings = self._mappings, []
        for m in mappings:
            m.stop()

    reset = stop
