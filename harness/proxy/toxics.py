"""Toxic types: attribute schemas with validation, and each type's per-chunk behaviour (Toxiproxy semantics)."""
from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from harness.proxy.link import Stage

# Toxics see the stream in chunks of at most one Toxiproxy read.
CHUNK = 32 * 1024
STREAMS = ("upstream", "downstream")


class ApiError(Exception):
    """An API answer other than success: Toxiproxy's ``{"error": message, "status": status}``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def bad_body(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


# -- what flows through a link ---------------------------------------------------------------------------
class Chunk:
    """Bytes read in one go from the source, stamped (loop time) when read or released by a delay."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes, ts: float) -> None:
        self.data = data
        self.ts = ts


class Marker:
    """End of a direction. ``EOF``: the source half-closed (propagated as a half-close); ``CLOSE``: a toxic
    closes the whole connection; ``RESET``: a toxic resets it (RST to both peers)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


EOF = Marker("EOF")
CLOSE = Marker("CLOSE")
RESET = Marker("RESET")
Item = Chunk | Marker


# -- attribute schemas -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attr:
    """One integer attribute; ``minimum`` is inclusive. ``unit`` goes into error messages."""

    name: str
    unit: str
    minimum: int = 0
    maximum: int | None = None
    default: int = 0


class Toxic:
    """Base of the toxic types. ``attrs`` holds validated integers in schema order."""

    type: ClassVar[str] = ""
    schema: ClassVar[tuple[Attr, ...]] = ()
    # Passthrough toxics forward synchronously: no task, nothing held.
    passthrough: ClassVar[bool] = False
    # Removing the toxic from a live connection closes that connection (Toxiproxy's CleanupToxic).
    closes_on_remove: ClassVar[bool] = False

    def __init__(self, attrs: dict[str, int]) -> None:
        self.attrs = attrs

    def check(self) -> None:
        """Cross-attribute checks; raise ApiError(400)."""

    def new_state(self) -> dict[str, Any]:
        return {}

    async def pipe(self, stage: Stage) -> None:
        while True:
            item = await stage.recv()
            stage.forward(item)
            if isinstance(item, Marker):
                return


class Noop(Toxic):
    type = "noop"
    passthrough = True


class Latency(Toxic):
    """Each chunk waits ``latency`` +- uniform ``jitter`` ms counted from when it was read, so a stream is
    delayed, not throttled."""

    type = "latency"
    schema = (Attr("latency", "milliseconds"), Attr("jitter", "milliseconds"))

    async def pipe(self, stage: Stage) -> None:
        loop = stage.loop
        latency, jitter = self.attrs["latency"] / 1000, self.attrs["jitter"] / 1000
        while True:
            item = await stage.recv()
            if isinstance(item, Chunk):
                delay = latency + (random.uniform(-jitter, jitter) if jitter else 0.0)
                due = item.ts + delay
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                # Later delaying toxics count from this release, so chained latencies add up.
                item.ts = max(item.ts, due)
            stage.forward(item)
            if isinstance(item, Marker):
                return


class Bandwidth(Toxic):
    """At most ``rate`` KB/s (KB = 1000 bytes), sent in slices of at most 100 ms worth of bytes, each
    released when a link of that rate would have delivered its last byte."""

    type = "bandwidth"
    schema = (Attr("rate", "KB/s", minimum=1),)

    async def pipe(self, stage: Stage) -> None:
        loop = stage.loop
        rate = self.attrs["rate"] * 1000
        step = self.attrs["rate"] * 100
        free_at = 0.0
        while True:
            item = await stage.recv()
            if isinstance(item, Marker):
                stage.forward(item)
                return
            data = item.data
            while data:
                piece = data[:step]
                done = max(loop.time(), free_at) + len(piece) / rate
                wait = done - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                free_at = done
                data = data[step:]
                stage.hold(Chunk(data, item.ts) if data else None)
                stage.put(Chunk(piece, item.ts))


class SlowClose(Toxic):
    """Data passes; the end of the stream (close or half-close) is delayed by ``delay`` ms."""

    type = "slow_close"
    schema = (Attr("delay", "milliseconds"),)

    async def pipe(self, stage: Stage) -> None:
        while True:
            item = await stage.recv()
            if isinstance(item, Marker):
                await asyncio.sleep(self.attrs["delay"] / 1000)
                stage.forward(item)
                return
            stage.forward(item)


class Timeout(Toxic):
    """Swallows all data; closes the connection ``timeout`` ms after the last chunk (0: holds it forever).
    Removing the toxic closes the connections it affected."""

    type = "timeout"
    schema = (Attr("timeout", "milliseconds"),)
    closes_on_remove = True

    async def pipe(self, stage: Stage) -> None:
        timeout = self.attrs["timeout"] / 1000 or None
        while True:
            item = await stage.recv_within(timeout)
            if item is None:
                stage.put(CLOSE)
                return
            if isinstance(item, Marker):
                stage.forward(item)
                return
            stage.drop(item)


class ResetPeer(Toxic):
    """On the first chunk (dropped) or end of stream, waits ``timeout`` ms, then resets the connection:
    both peers get an RST (SO_LINGER 0)."""

    type = "reset_peer"
    schema = (Attr("timeout", "milliseconds"),)

    async def pipe(self, stage: Stage) -> None:
        item = await stage.recv()
        stage.drop(item)
        if self.attrs["timeout"]:
            await asyncio.sleep(self.attrs["timeout"] / 1000)
        stage.put(RESET)


class Slicer(Toxic):
    """Cuts each chunk into slices of about ``average_size`` (+- ``size_variation``) bytes, sent ``delay``
    microseconds apart."""

    type = "slicer"
    schema = (Attr("average_size", "bytes", minimum=1), Attr("size_variation", "bytes"),
              Attr("delay", "microseconds"))

    def check(self) -> None:
        if self.attrs["size_variation"] >= self.attrs["average_size"]:
            raise ApiError(f"invalid toxic attributes: slicer size_variation ({self.attrs['size_variation']}) must "
                           f"be smaller than average_size ({self.attrs['average_size']})", 400)

    def cuts(self, start: int, end: int) -> list[int]:
        """Slice boundaries, by the same halving as Toxiproxy (which cannot go below 1 byte here: the
        variation is smaller than the average size)."""
        avg, var = self.attrs["average_size"], self.attrs["size_variation"]
        out: list[int] = []
        todo = [(start, end)]
        while todo:
            a, b = todo.pop()
            if (b - a) - avg <= var:
                out.append(b)
                continue
            mid = a + (b - a) // 2
            if var > 0:
                mid += random.randrange(var * 2) - var
            todo.append((mid, b))
            todo.append((a, mid))
        return out

    async def pipe(self, stage: Stage) -> None:
        loop = stage.loop
        delay = self.attrs["delay"] / 1_000_000
        due = 0.0
        while True:
            item = await stage.recv()
            if isinstance(item, Marker):
                stage.forward(item)
                return
            data, pos = item.data, 0
            for end in self.cuts(0, len(data)):
                if end <= pos:
                    continue
                # Sub-millisecond gaps are kept on average: slices that are due go out together.
                due = max(due + delay, loop.time()) if delay else due
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                stage.hold(Chunk(data[end:], item.ts) if end < len(data) else None)
                stage.put(Chunk(data[pos:end], item.ts))
                pos = end


class LimitData(Toxic):
    """Passes ``bytes`` bytes per connection and direction (the chunk crossing the limit is cut), then
    closes the connection."""

    type = "limit_data"
    schema = (Attr("bytes", "bytes"),)

    def new_state(self) -> dict[str, Any]:
        return {"sent": 0}

    async def pipe(self, stage: Stage) -> None:
        limit, state = self.attrs["bytes"], stage.state
        while True:
            item = await stage.recv()
            if isinstance(item, Marker):
                stage.forward(item)
                return
            remaining = max(limit - state["sent"], 0)
            if len(item.data) > remaining:
                stage.drop(Chunk(item.data[remaining:], item.ts))
                item.data = item.data[:remaining]
            state["sent"] += len(item.data)
            if item.data:
                stage.forward(item)
            else:
                stage.hold(None)
            if state["sent"] >= limit:
                stage.put(CLOSE)
                return


class SlowConnect(Toxic):
    """Not in Toxiproxy: each new connection waits ``delay`` ms before the proxy dials the upstream, so the
    client's connect succeeds but the server's first word comes late. Open connections are not affected."""

    type = "slow_connect"
    schema = (Attr("delay", "milliseconds"),)
    passthrough = True


class Drop(Toxic):
    """Not in Toxiproxy: packet loss as a TCP peer lives it. Each chunk is lost with ``percent`` % chance and
    arrives after a retransmission timeout (``rto`` ms, doubling while the same chunk keeps being lost, at
    most 6 times), so the stream stalls now and then but stays whole and in order."""

    type = "drop"
    schema = (Attr("percent", "percent of chunks", maximum=100), Attr("rto", "milliseconds", minimum=1, default=200))
    MAX_RETRIES = 6

    async def pipe(self, stage: Stage) -> None:
        loop = stage.loop
        loss, rto = self.attrs["percent"] / 100, self.attrs["rto"] / 1000
        while True:
            item = await stage.recv()
            if isinstance(item, Chunk):
                wait, backoff = 0.0, rto
                for _ in range(self.MAX_RETRIES):
                    if random.random() >= loss:
                        break
                    wait += backoff
                    backoff *= 2
                if wait:
                    await asyncio.sleep(wait)
                    item.ts = max(item.ts, loop.time())
            stage.forward(item)
            if isinstance(item, Marker):
                return


TYPES: dict[str, type[Toxic]] = {t.type: t for t in (Noop, Latency, Bandwidth, SlowClose, Timeout, ResetPeer,
                                                      Slicer, LimitData, SlowConnect, Drop)}


def _int_value(toxic_type: str, attr: Attr, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_body(f"attribute {attr.name} of {toxic_type} must be a number ({attr.unit}), got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise bad_body(f"attribute {attr.name} of {toxic_type} must be a whole number ({attr.unit}), got {value!r}")
    number = int(value)
    if number < attr.minimum or (attr.maximum is not None and number > attr.maximum):
        bound = "> 0" if attr.minimum == 1 else f">= {attr.minimum}"
        if attr.maximum is not None:
            bound += f" and <= {attr.maximum}"
        raise ApiError(f"invalid toxic attributes: {toxic_type} {attr.name} must be {bound} ({attr.unit}), "
                       f"got {number}", 400)
    return number


def make_toxic(toxic_type: str, raw: Any, base: dict[str, int] | None = None) -> Toxic:
    """A toxic of ``toxic_type`` from JSON attributes, merged over ``base`` (an update keeps what it does not
    name). Unknown attribute names are refused: a misspelt one would otherwise silently do nothing."""
    cls = TYPES.get(toxic_type)
    if cls is None:
        raise ApiError("invalid toxic type", 400)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_body(f"attributes must be a JSON object, got {type(raw).__name__}")
    known = {a.name: a for a in cls.schema}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        names = ", ".join(known) or "none"
        raise ApiError(f"invalid toxic attributes: unknown attribute {unknown[0]!r} for {toxic_type} "
                       f"(known: {names})", 400)
    attrs = {a.name: (base or {}).get(a.name, a.default) for a in cls.schema}
    for name, value in raw.items():
        attrs[name] = _int_value(toxic_type, known[name], value)
    for attr in cls.schema:
        if attrs[attr.name] < attr.minimum:
            raise ApiError(f"invalid toxic attributes: {toxic_type} needs attribute {attr.name} "
                           f"(> 0, {attr.unit})", 400)
    toxic = cls(attrs)
    toxic.check()
    return toxic


def check_toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_body(f"toxicity must be a number between 0 and 1, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ApiError(f"invalid toxicity {value}: must be between 0 and 1 (the share of connections affected)",
                       400)
    return float(value)


@dataclass
class ToxicSpec:
    """A toxic as the API knows it: name, type, stream, toxicity and its attributes."""

    name: str
    stream: str
    toxicity: float
    toxic: Toxic

    @property
    def type(self) -> str:
        return self.toxic.type

    def to_json(self) -> dict[str, Any]:
        tox = self.toxicity
        return {"attributes": dict(self.toxic.attrs), "name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": int(tox) if tox.is_integer() else tox}
