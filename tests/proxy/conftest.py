"""Fixtures for the proxy tests: one proxy server for the module, clients (ours and toxiproxy-python's),
real loopback upstreams, and a clean server after each test."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import toxiproxy
from proxykit import BlobServer, EchoServer

from harness.proxy import ProxyServer
from harness.toxiproxy import ToxiproxyClient


@pytest.fixture(scope="module")
def proxy_server() -> Iterator[ProxyServer]:
    server = ProxyServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(proxy_server: ProxyServer) -> Iterator[ToxiproxyClient]:
    """Our wrapper on the module's server; every proxy on it is deleted after the test."""
    tp = ToxiproxyClient(proxy_server.url)
    yield tp
    for name in tp.proxies():
        tp.delete_proxy(name)
    tp.close()


@pytest.fixture
def raw(proxy_server: ProxyServer, client: ToxiproxyClient) -> Iterator[toxiproxy.Toxiproxy]:
    """toxiproxy-python's own objects, pointed at the module's server (its address is class-global)."""
    from toxiproxy.api import APIConsumer

    saved = APIConsumer.host, APIConsumer.port
    server = toxiproxy.Toxiproxy()
    server.update_api_consumer(proxy_server.host, proxy_server.port)
    yield server
    APIConsumer.host, APIConsumer.port = saved


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def blob() -> Iterator[Callable[[bytes], BlobServer]]:
    made: list[BlobServer] = []

    def make(payload: bytes) -> BlobServer:
        made.append(BlobServer(payload))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def echo_proxy(client: ToxiproxyClient, echo: EchoServer) -> dict[str, Any]:
    """A proxy named ``echo`` in front of the echo server."""
    return client.create_proxy("echo", listen="127.0.0.1:0", upstream=echo.address)
