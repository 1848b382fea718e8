"""Proxies: a listener per proxy, its open connections and toxic chains, and the named collection the API
works on (create, update, enable/disable, populate, reset) with Toxiproxy's rules."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from harness.proxy.link import Connection
from harness.proxy.toxics import STREAMS, ApiError, ToxicSpec

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def split_address(text: str, what: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port). An empty host means loopback: dbdrill never
    listens on every interface unless asked by address."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ApiError(f"bad {what} address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5432", 400)
    host = host.strip("[]") or DEFAULT_HOST
    return host, int(port_text)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve_listen(loop: asyncio.AbstractEventLoop, text: str) -> str:
    """The listen address as the proxy will report it: host resolved to an IP, port as given (0 stays 0
    until the listener is bound)."""
    host, port = split_address(text or f"{DEFAULT_HOST}:0", "listen")
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ApiError(f"bad listen address {text!r}: {exc}", 400) from exc
    return join_address(str(infos[0][4][0]), port)


class Proxy:
    """One named proxy: ``listen`` -> ``upstream``, with a toxic chain per stream."""

    def __init__(self, name: str, listen: str, upstream: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.loop = loop
        self.chains: dict[str, list[ToxicSpec]] = {s: [] for s in STREAMS}
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream, "enabled": self.enabled,
                "toxics": [t.to_json() for t in self.toxics()]}

    def upstream_address(self) -> tuple[str, int]:
        return split_address(self.upstream, "upstream")

    # -- listening ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen (keeping the port once one was given); a busy address is Toxiproxy's 500."""
        if self.enabled:
            return
        self.listen = await resolve_listen(self.loop, self.listen)
        host, port = split_address(self.listen, "listen")
        try:
            self._server = await self.loop.create_server(
                lambda: Connection(self, self.loop).client, host, port, reuse_address=True, backlog=1024)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ApiError(f"listen tcp {self.listen}: bind: {reason}", 500) from exc
        bound = self._server.sockets[0].getsockname()
        self.listen = join_address(bound[0], bound[1])
        self.enabled = True
        logger.info("proxy %s listening on %s -> %s", self.name, self.listen, self.upstream)

    def stop(self) -> None:
        """Close the listener and drop every open connection."""
        if not self.enabled:
            return
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.close(flush=False)
        logger.info("proxy %s stopped", self.name)

    async def differs(self, listen: str, upstream: str) -> bool:
        return await resolve_listen(self.loop, listen) != self.listen or upstream != self.upstream

    # -- toxics ------------------------------------------------------------------------------------
    def toxics(self) -> list[ToxicSpec]:
        return [t for s in STREAMS for t in self.chains[s]]

    def find_toxic(self, name: str) -> ToxicSpec:
        for spec in self.toxics():
            if spec.name == name:
                return spec
        raise ApiError("toxic not found", 404)

    def add_toxic(self, spec: ToxicSpec) -> None:
        if any(t.name == spec.name for t in self.toxics()):
            raise ApiError("toxic already exists", 409)
        self.chains[spec.stream].append(spec)
        for conn in list(self.connections):
            conn.toxic_added(spec)

    def update_toxic(self, spec: ToxicSpec) -> None:
        for conn in list(self.connections):
            conn.toxic_updated(spec)

    def remove_toxic(self, spec: ToxicSpec) -> None:
        self.chains[spec.stream].remove(spec)
        for conn in list(self.connections):
            conn.toxic_removed(spec)

    def reset_toxics(self) -> None:
        for spec in self.toxics():
            self.remove_toxic(spec)


@dataclass
class ProxyInput:
    name: str
    listen: str
    upstream: str
    enabled: bool


class ProxyCollection:
    """The proxies by name. Callers hold ``lock`` around changes (the API does, per request)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError("proxy not found", 404)
        return proxy

    async def create(self, spec: ProxyInput) -> Proxy:
        if spec.name in self.proxies:
            raise ApiError("proxy already exists", 409)
        split_address(spec.upstream, "upstream")
        proxy = Proxy(spec.name, spec.listen or f"{DEFAULT_HOST}:0", spec.upstream, self.loop)
        if spec.enabled:
            await proxy.start()
        else:
            # Checked now, so a disabled proxy cannot fail later for a malformed address.
            await resolve_listen(self.loop, proxy.listen)
        self.proxies[spec.name] = proxy
        return proxy

    async def update(self, proxy: Proxy, listen: str, upstream: str, enabled: bool) -> Proxy:
        split_address(upstream, "upstream")
        if await proxy.differs(listen, upstream):
            proxy.stop()
            proxy.listen, proxy.upstream = listen or f"{DEFAULT_HOST}:0", upstream
        if enabled and not proxy.enabled:
            await proxy.start()
        elif not enabled:
            proxy.stop()
        return proxy

    def delete(self, name: str) -> None:
        proxy = self.get(name)
        proxy.stop()
        del self.proxies[name]

    async def populate(self, inputs: list[ProxyInput]) -> tuple[list[Proxy], ApiError | None]:
        """Create or replace each proxy in order (an unchanged one is kept as it is, toxics and all);
        stops at the first error, returning what was done with it."""
        done: list[Proxy] = []
        for spec in inputs:
            try:
                split_address(spec.upstream, "upstream")
                existing = self.proxies.get(spec.name)
                if existing is not None:
                    if not await existing.differs(spec.listen or f"{DEFAULT_HOST}:0", spec.upstream):
                        done.append(existing)
                        continue
                    existing.stop()
                    del self.proxies[spec.name]
                done.append(await self.create(spec))
            except ApiError as exc:
                return done, exc
        return done, None

    async def reset(self) -> None:
        """Every proxy enabled, every toxic removed (toxics whose removal closes connections do so)."""
        for proxy in list(self.proxies.values()):
            await proxy.start()
            proxy.reset_toxics()

    def close(self) -> None:
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                proxy.stop()
        self.proxies.clear()
