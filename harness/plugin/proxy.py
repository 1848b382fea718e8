"""dbdrill pytest fixtures for the fault proxy: the session's Toxiproxy client, a per-test proxy factory, and
a reset of the stack's proxies after each test (only if the proxy was ever started)."""
from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.stack import Stack
    from harness.toxiproxy import ToxiproxyClient


@pytest.fixture(scope="session")
def toxiproxy(dbdrill_stack: Stack) -> ToxiproxyClient:
    """The stack's Toxiproxy client: the embedded server (started now), or the external one given by
    --dbdrill-toxiproxy-url / DBDRILL_TOXIPROXY_URL. Faults use it by default."""
    return dbdrill_stack.toxiproxy


@dataclass(frozen=True)
class ProxyHandle:
    """A proxy made for one test: connect to ``listen`` (``listen_host``, ``listen_port``)."""

    name: str
    listen_host: str
    listen_port: int
    upstream: str
    info: dict[str, Any] = field(repr=False, compare=False)

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


class ProxyFactory:
    """``create(name, upstream, listen=None)``: a proxy on a fresh loopback address of its own (or ``listen``);
    every proxy made here is deleted after the test, pass or fail."""

    def __init__(self, client: ToxiproxyClient, stack: Stack) -> None:
        self.client = client
        self.stack = stack
        self.made: dict[str, ProxyHandle] = {}

    def create(self, name: str, upstream: str, listen: str | None = None) -> ProxyHandle:
        if listen is None:
            listen = f"{self.stack.hosts.allocate()}:0"
        info = self.client.create_proxy(name, listen=listen, upstream=upstream)
        host, _, port = info["listen"].rpartition(":")
        handle = ProxyHandle(name=name, listen_host=host.strip("[]"), listen_port=int(port), upstream=upstream,
                             info=info)
        self.made[name] = handle
        return handle

    def __getitem__(self, name: str) -> ProxyHandle:
        return self.made[name]

    def close(self) -> None:
        from harness.toxiproxy import ToxiproxyError

        errors = []
        for name in list(self.made):
            try:
                self.client.delete_proxy(name)
            except ToxiproxyError as exc:
                if exc.status != 404:
                    errors.append(exc)
            del self.made[name]
        if errors:
            raise errors[0]


@pytest.fixture
def proxies(toxiproxy: ToxiproxyClient, dbdrill_stack: Stack) -> Iterator[ProxyFactory]:
    """Make proxies for this test: ``proxies.create("db", upstream="127.0.0.1:5432")`` -> handle with
    ``.listen_host``/``.listen_port``. They are deleted after the test."""
    factory = ProxyFactory(toxiproxy, dbdrill_stack)
    yield factory
    factory.close()


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """After the test's fixtures (and the fault heal) are done: toxics of the stack's proxies removed and the
    proxies enabled again, so the next test starts clean. Nothing is started for tests that never used it."""
    yield
    module = sys.modules.get("harness.toxiproxy")
    # Not imported means no client was ever made: nothing to reset, and nothing (requests) to load.
    if module is None:
        return
    client = module.current_default()
    if client is None:
        return
    try:
        client.reset()
    except module.ToxiproxyError as exc:
        if exc.status != 0:
            raise
        # The server is gone (its stack was closed): nothing left to reset, now or later.
        if module.current_default() is client:
            module.set_default_client(None)
