"""The client wrapper: several servers at once (toxiproxy-python keeps one global address), timeouts instead of
hangs, every error as ToxiproxyError, name prefixes for shared servers, and a reset that touches only its own."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import toxiproxy
from proxykit import EchoServer, round_trip
from toxiproxy.api import APIConsumer

import harness.toxiproxy as tpmod
from harness.errors import HarnessError
from harness.proxy import ProxyServer
from harness.toxiproxy import ToxiproxyClient, ToxiproxyError, default_client, set_default_client


@pytest.fixture
def hung_api() -> Iterator[str]:
    """An address that accepts connections and never answers."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_two_servers_at_once(proxy_server: ProxyServer, client: ToxiproxyClient, echo: EchoServer) -> None:
    with ProxyServer() as other_server:
        other = ToxiproxyClient(other_server.url)
        errors: list[BaseException] = []

        def work(c: ToxiproxyClient, name: str) -> None:
            try:
                for i in range(20):
                    c.create_proxy(f"{name}{i}", "127.0.0.1:0", echo.address)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(client, "a")), threading.Thread(target=work, args=(other, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert set(client.proxies()) == {f"a{i}" for i in range(20)}
        assert set(other.proxies()) == {f"b{i}" for i in range(20)}
        # toxiproxy-python's own class-level address was left alone.
        assert (APIConsumer.host, APIConsumer.port) == ("127.0.0.1", 8474)


def test_a_hung_server_times_out(hung_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c = ToxiproxyClient(hung_api, timeout=0.3)
    t0 = time.perf_counter()
    with pytest.raises(ToxiproxyError, match="cannot reach Toxiproxy at") as info:
        c.proxies()
    assert info.value.status == 0 and time.perf_counter() - t0 < 3
    # Direct toxiproxy-python users get a timeout too (the patch's default, shortened here).
    monkeypatch.setattr(tpmod, "DEFAULT_TIMEOUT", 0.3)
    host, port = hung_api.removeprefix("http://").split(":")
    monkeypatch.setattr(APIConsumer, "host", host)
    monkeypatch.setattr(APIConsumer, "port", int(port))
    with pytest.raises(requests.Timeout):
        toxiproxy.Toxiproxy().proxies()


def test_errors_carry_status_and_body(client: ToxiproxyClient, echo: EchoServer) -> None:
    made = client.create_proxy("p", "127.0.0.1:0", echo.address)
    cases = [
        (lambda: client.create_proxy("p", "127.0.0.1:0", echo.address), 409, "proxy already exists"),
        (lambda: client.get_proxy("missing"), 404, "proxy not found"),
        (lambda: client.delete_proxy("missing"), 404, "proxy not found"),
        (lambda: client.remove_toxic("p", "missing"), 404, "toxic not found"),
        (lambda: client.update_toxic("p", "missing", toxicity=0.5), 404, "toxic not found"),
        (lambda: client.add_toxic("p", "warp"), 400, "invalid toxic type"),
        (lambda: client.add_toxic("p", "latency", {"latency": -1}), 400,
         "invalid toxic attributes: latency latency must be >= 0 (milliseconds), got -1"),
        (lambda: client.create_proxy("q", made["listen"], echo.address), 500,
         f"listen tcp {made['listen']}: bind: address already in use"),
    ]
    for call, status, message in cases:
        with pytest.raises(ToxiproxyError) as info:
            call()
        assert info.value.status == status
        assert info.value.body == {"error": message, "status": status}
        assert message in str(info.value)
        assert isinstance(info.value, HarnessError)


def test_wrapper_calls_round_trip(client: ToxiproxyClient, echo: EchoServer) -> None:
    assert client.version()
    made = client.create_proxy("w", "127.0.0.1:0", echo.address)
    assert client.get_proxy("w") == made
    toxic = client.add_toxic("w", "latency", {"latency": 100}, stream="upstream", toxicity=1.0, name="lag")
    assert toxic == {"attributes": {"latency": 100, "jitter": 0}, "name": "lag", "type": "latency",
                     "stream": "upstream", "toxicity": 1}
    assert round_trip(made["listen"]) >= 0.1
    assert client.update_toxic("w", "lag", attributes={"latency": 1})["attributes"]["latency"] == 1
    updated = client.update_toxic("w", "lag", toxicity=0.0)
    assert updated["toxicity"] == 0 and client.toxics("w") == [updated]
    client.remove_toxic("w", "lag")
    assert client.toxics("w") == []
    assert client.update_proxy("w", enabled=False)["enabled"] is False
    assert client.update_proxy("w", enabled=True)["listen"] == made["listen"]
    populated = client.populate([{"name": "w2", "listen": "127.0.0.1:0", "upstream": echo.address}])
    assert [p["name"] for p in populated] == ["w2"]
    client.delete_proxy("w2")
    assert set(client.proxies()) == {"w"}


def test_prefix_keeps_workers_apart_and_reset_touches_only_own(proxy_server: ProxyServer, client: ToxiproxyClient,
                                                              echo: EchoServer) -> None:
    gw0 = ToxiproxyClient(proxy_server.url, prefix="gw0-")
    gw1 = ToxiproxyClient(proxy_server.url, prefix="gw1-")
    a = gw0.create_proxy("db", "127.0.0.1:0", echo.address)
    b = gw1.create_proxy("db", "127.0.0.1:0", echo.address)  # same name, no clash
    assert a["name"] == b["name"] == "db" and a["listen"] != b["listen"]
    assert set(client.proxies()) == {"gw0-db", "gw1-db"}
    assert set(gw0.proxies()) == {"db"}

    gw0.add_toxic("db", "latency", {"latency": 100})
    gw1.add_toxic("db", "latency", {"latency": 100})
    gw0.update_proxy("db", enabled=False)
    gw1.update_proxy("db", enabled=False)
    gw0.reset()
    assert gw0.get_proxy("db")["enabled"] is True and gw0.toxics("db") == []
    assert gw1.get_proxy("db")["enabled"] is False and len(gw1.toxics("db")) == 1
    gw1.reset_all()
    assert gw1.get_proxy("db")["enabled"] is True and gw1.toxics("db") == []
    gw0.delete_proxy("db")
    gw0.reset()  # a proxy deleted since is simply forgotten


def test_default_client(client: ToxiproxyClient) -> None:
    previous = tpmod.current_default()
    try:
        set_default_client(None)
        with pytest.raises(HarnessError, match="no Toxiproxy client"):
            default_client()
        set_default_client(client)
        assert default_client() is client
    finally:
        set_default_client(previous)


def test_bad_url_is_refused() -> None:
    with pytest.raises(HarnessError, match="expected http://HOST:PORT"):
        ToxiproxyClient("ftp://example")
    assert ToxiproxyClient("127.0.0.1:8474").url == "http://127.0.0.1:8474"


def test_unreachable_server_says_so() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ToxiproxyError, match="Is the server running") as info:
        ToxiproxyClient(f"http://127.0.0.1:{port}").version()
    assert info.value.status == 0


def test_server_on_a_busy_port_fails_to_start_with_the_fix() -> None:
    from harness.errors import ServiceError

    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        server = ProxyServer(port=port)
        with pytest.raises(ServiceError, match=f"cannot listen on 127.0.0.1:{port}.*Pick another --port"):
            server.start()
    with pytest.raises(ServiceError, match="not running"):
        _ = server.url
