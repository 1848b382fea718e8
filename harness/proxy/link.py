"""One proxied connection: its two sockets and, per direction, a link that passes data straight through or
through a chain of toxic stages, rebuilt live as toxics come and go without losing or reordering data."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING

from harness.proxy.toxics import CHUNK, CLOSE, EOF, RESET, Chunk, Item, Marker, ToxicSpec

if TYPE_CHECKING:
    from harness.proxy.listener import Proxy

logger = logging.getLogger(__name__)

# Bytes a toxic chain may hold (a latency toxic on a fast stream) before the source is paused.
HIGH_WATER = 8 * 1024 * 1024
LOW_WATER = 2 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
# Large reads, few syscalls per byte: bulk through the proxy measured 0.55-0.61 of direct with 4 MiB, 0.46-0.53
# with 1 MiB (bench/bench_proxy.py). One buffer per event loop.
READ_SIZE = 4 * 1024 * 1024
# A fixed, large send buffer: fewer partial sends (whose rest the transport must copy) on fast links.
SEND_BUFFER = 4 * 1024 * 1024
# Per thread, so per event loop: a loop handles one read at a time.
_local = threading.local()
# Python 3.11's transports copy what they cannot send at once; later ones keep a view of it.
_TRANSPORT_COPIES = sys.version_info < (3, 12)
_LINGER_RST = struct.pack("ii", 1, 0)


class Sink:
    """The end of a link's chain: writes to the destination socket, or ends the connection on a marker."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def push(self, item: Item) -> None:
        link = self.link
        if isinstance(item, Chunk):
            link.inflight -= len(item.data)
            link.dest.write(item.data)
            if link.source_paused:
                link.flow()
        else:
            link.conn.finish(link, item)


class Stage:
    """One toxic in one link. Its task takes items with ``recv`` and emits with ``put``; whatever it took and
    has not emitted yet is in ``holding``, so the stage can be stopped at any await without losing data.
    A stage whose toxic is passthrough, or that lost the toxicity draw, forwards synchronously."""

    def __init__(self, link: Link, spec: ToxicSpec) -> None:
        self.link = link
        self.loop = link.loop
        self.spec = spec
        self.queue: deque[Item] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.holding: Item | None = None
        self.output: Stage | Sink = link.sink
        self.task: asyncio.Task[None] | None = None
        self.state = spec.toxic.new_state()
        self.active = False

    # -- lifecycle (called by the link) -------------------------------------------------------------
    def start(self) -> None:
        """(Re)draw toxicity for this connection and run the toxic."""
        toxicity = self.spec.toxicity
        self.active = toxicity >= 1.0 or random.random() < toxicity
        if self.active and not self.spec.toxic.passthrough:
            self.task = self.loop.create_task(self._run(), name=f"toxic {self.spec.name}")

    async def _run(self) -> None:
        try:
            await self.spec.toxic.pipe(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("toxic %s failed; closing the connection", self.spec.name)
            self.link.conn.close()

    def stop(self) -> list[Item]:
        """Stop the toxic; returns what it held and had queued, oldest first."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        pending = ([self.holding] if self.holding is not None else []) + list(self.queue)
        self.holding = None
        self.queue.clear()
        return pending

    def restart(self) -> None:
        """Run the (updated) toxic again over what this stage holds."""
        pending = self.stop()
        self.start()
        for item in pending:
            self.push(item)

    # -- data path ----------------------------------------------------------------------------------
    def push(self, item: Item) -> None:
        if self.task is None:
            self.output.push(item)
            return
        self.queue.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the toxic's side ---------------------------------------------------------------------------
    async def recv(self) -> Item:
        """The next item; it counts as held until emitted, forwarded or dropped."""
        item = await self.recv_within(None)
        assert item is not None
        return item

    async def recv_within(self, timeout: float | None) -> Item | None:
        """The next item (held until emitted); None if ``timeout`` seconds pass first."""
        if not self.queue:
            fut = self.loop.create_future()
            self.waiter = fut
            timer = self.loop.call_later(timeout, _wake, fut) if timeout is not None else None
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
                if self.waiter is fut:
                    self.waiter = None
            if not self.queue:
                return None
        item = self.queue.popleft()
        self.holding = item
        return item

    def put(self, item: Item) -> None:
        self.output.push(item)

    def forward(self, item: Item) -> None:
        self.holding = None
        self.output.push(item)

    def hold(self, item: Item | None) -> None:
        self.holding = item

    def drop(self, item: Item) -> None:
        self.holding = None
        if isinstance(item, Chunk):
            self.link.inflight -= len(item.data)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Link:
    """One direction of a connection (``upstream``: client to server; ``downstream``: back)."""

    def __init__(self, conn: Connection, stream: str, source: Side, dest: Side, chain: list[ToxicSpec]) -> None:
        assert source.transport is not None and dest.transport is not None
        self.conn = conn
        self.loop = conn.loop
        self.stream = stream
        self.source = source.transport
        self.dest = dest.transport
        self.sink = Sink(self)
        self.stages: list[Stage] = []
        self.inflight = 0
        self.sink_paused = False
        self.source_paused = False
        self.ended = False
        for spec in chain:
            self.add(spec)

    def feed(self, data: bytes | memoryview) -> None:
        """Data read from the source (``data`` is only valid during this call)."""
        stages = self.stages
        if not stages:
            self.dest.write(data)
            if not _TRANSPORT_COPIES and self.dest.get_write_buffer_size():
                # The transport kept a view of the read buffer: the next read needs a fresh one.
                _local.buffer = None
            return
        now = self.loop.time()
        first = stages[0]
        self.inflight += len(data)
        for off in range(0, len(data), CHUNK):
            first.push(Chunk(bytes(data[off:off + CHUNK]), now))
        if self.inflight > HIGH_WATER:
            self.flow()

    def feed_end(self, marker: Marker) -> None:
        (self.stages[0] if self.stages else self.sink).push(marker)

    def flow(self) -> None:
        """Pause the source while the destination or the chain is full; resume once drained."""
        if self.sink_paused or self.inflight > HIGH_WATER:
            if not self.source_paused:
                self.source_paused = True
                self.source.pause_reading()
        elif self.source_paused and self.inflight <= LOW_WATER:
            self.source_paused = False
            self.source.resume_reading()

    # -- live chain changes -------------------------------------------------------------------------
    def add(self, spec: ToxicSpec) -> None:
        stage = Stage(self, spec)
        if self.stages:
            self.stages[-1].output = stage
        self.stages.append(stage)
        stage.start()

    def _find(self, spec: ToxicSpec) -> int:
        for i, stage in enumerate(self.stages):
            if stage.spec is spec:
                return i
        return -1

    def update(self, spec: ToxicSpec) -> None:
        i = self._find(spec)
        if i >= 0:
            self.stages[i].restart()

    def remove(self, spec: ToxicSpec) -> None:
        i = self._find(spec)
        if i < 0:
            return
        stage = self.stages.pop(i)
        if i > 0:
            self.stages[i - 1].output = stage.output
        pending = stage.stop()
        if stage.active and spec.toxic.closes_on_remove:
            for item in pending:
                if isinstance(item, Chunk):
                    self.inflight -= len(item.data)
            stage.output.push(CLOSE)
            return
        # What the stage held goes on, after what it already emitted and before anything newer.
        for item in pending:
            stage.output.push(item)

    def stop(self) -> None:
        for stage in self.stages:
            stage.stop()


class Side(asyncio.BufferedProtocol):
    """One socket of a proxied connection: the client's or the upstream's. Reads go into one buffer per
    event loop (no allocation per read); whatever is not sent at once is copied by the transport or the
    toxic chain before the next read."""

    def __init__(self, conn: Connection, role: str) -> None:
        self.conn = conn
        self.role = role
        self.transport: asyncio.Transport | None = None
        self.out: Link | None = None
        self.inbound: Link | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        if self.role == "client":
            self.conn.accepted()
        else:
            # Links are built here, not after the connect call returns: the upstream may have sent data
            # already, and reading starts before that call's caller runs again.
            self.conn.connected()

    def get_buffer(self, sizehint: int) -> memoryview:
        buf: memoryview | None = getattr(_local, "buffer", None)
        if buf is None:
            buf = _local.buffer = memoryview(bytearray(READ_SIZE))
        return buf

    def buffer_updated(self, nbytes: int) -> None:
        if self.out is not None:
            self.out.feed(_local.buffer[:nbytes])

    def eof_received(self) -> bool:
        if self.out is not None:
            self.out.feed_end(EOF)
        return True

    def pause_writing(self) -> None:
        if self.inbound is not None:
            self.inbound.sink_paused = True
            self.inbound.flow()

    def resume_writing(self) -> None:
        if self.inbound is not None:
            self.inbound.sink_paused = False
            self.inbound.flow()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost(exc)


class Connection:
    """A client accepted by a proxy and its upstream connection. Reading from the client waits until the
    upstream is connected; then each direction gets its link, built from the proxy's current toxics."""

    def __init__(self, proxy: Proxy, loop: asyncio.AbstractEventLoop) -> None:
        self.proxy = proxy
        self.loop = loop
        self.client = Side(self, "client")
        self.upstream = Side(self, "upstream")
        self.links: dict[str, Link] = {}
        self.closed = False
        self._task: asyncio.Task[None] | None = None

    def accepted(self) -> None:
        assert self.client.transport is not None
        self.client.transport.pause_reading()
        self.proxy.connections.add(self)
        self._task = self.loop.create_task(self._connect(), name=f"connect {self.proxy.name}")

    async def _connect(self) -> None:
        host, port = self.proxy.upstream_address()
        delay = sum(spec.toxic.attrs["delay"] for spec in self.proxy.toxics() if spec.type == "slow_connect"
                    and (spec.toxicity >= 1.0 or random.random() < spec.toxicity))
        if delay:
            await asyncio.sleep(delay / 1000)
        try:
            await asyncio.wait_for(self.loop.create_connection(lambda: self.upstream, host, port), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            logger.info("proxy %s: cannot connect to upstream %s: %s", self.proxy.name, self.proxy.upstream, exc)
            self.close(flush=False)

    def connected(self) -> None:
        """The upstream connection is made: build both links from the proxy's toxics, start reading."""
        if self.closed:
            assert self.upstream.transport is not None
            self.upstream.transport.abort()
            return
        chains = self.proxy.chains
        up = Link(self, "upstream", self.client, self.upstream, chains["upstream"])
        down = Link(self, "downstream", self.upstream, self.client, chains["downstream"])
        self.links = {"upstream": up, "downstream": down}
        self.client.out, self.client.inbound = up, down
        self.upstream.out, self.upstream.inbound = down, up
        assert self.client.transport is not None
        self.client.transport.resume_reading()

    # -- toxics of the proxy changed ---------------------------------------------------------------
    def toxic_added(self, spec: ToxicSpec) -> None:
        if spec.stream in self.links:
            self.links[spec.stream].add(spec)

    def toxic_updated(self, spec: ToxicSpec) -> None:
        if spec.stream in self.links:
            self.links[spec.stream].update(spec)

    def toxic_removed(self, spec: ToxicSpec) -> None:
        if spec.stream in self.links:
            self.links[spec.stream].remove(spec)

    # -- ending -------------------------------------------------------------------------------------
    def finish(self, link: Link, marker: Marker) -> None:
        """A marker reached the end of ``link``: half-close its destination, or end the connection."""
        if self.closed:
            return
        if marker is EOF:
            if link.dest.can_write_eof():
                link.dest.write_eof()
            link.ended = True
            if all(lk.ended for lk in self.links.values()):
                self.close()
        else:
            self.close(reset=marker is RESET)

    def lost(self, exc: Exception | None) -> None:
        """One socket is gone: a reset from a peer is passed on as a reset, anything else as a close."""
        if not self.closed:
            self.close(flush=exc is None, reset=isinstance(exc, ConnectionResetError))

    def close(self, *, flush: bool = True, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for link in self.links.values():
            link.stop()
        for side in (self.client, self.upstream):
            tr = side.transport
            if tr is None:
                continue
            if reset:
                sock = tr.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                tr.abort()
            elif flush and not tr.is_closing():
                tr.close()
            else:
                tr.abort()
        self.proxy.connections.discard(self)
