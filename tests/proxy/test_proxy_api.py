"""The Toxiproxy v2 HTTP API of the embedded server: every endpoint, its JSON shapes, status codes and error
bodies, through raw HTTP, toxiproxy-python's own objects and our wrapper; the server survives bad input."""
from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import requests
import toxiproxy
from proxykit import EchoServer, closed_by_peer, connect, recv_exact, refused, round_trip
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.proxy import ProxyServer
from harness.toxiproxy import ToxiproxyClient


def api(server: ProxyServer, method: str, path: str, body: Any = None, raw: bytes | None = None,
        headers: dict[str, str] | None = None) -> requests.Response:
    return requests.request(method, server.url + path, json=body, data=raw, headers=headers, timeout=5)


def assert_error(resp: requests.Response, status: int, message: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json() == {"error": message, "status": status}


def assert_serving(server: ProxyServer, echo: EchoServer) -> None:
    """The API still answers and a fresh proxy still carries data."""
    assert api(server, "GET", "/version").status_code == 200
    resp = api(server, "POST", "/proxies", {"name": "alive-check", "listen": "127.0.0.1:0", "upstream": echo.address})
    assert resp.status_code == 201, resp.text
    round_trip(resp.json()["listen"])
    assert api(server, "DELETE", "/proxies/alive-check").status_code == 204


def test_version(proxy_server: ProxyServer, raw: toxiproxy.Toxiproxy, client: ToxiproxyClient) -> None:
    resp = api(proxy_server, "GET", "/version")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json;charset=utf-8"
    assert resp.json()["version"].startswith("2.")
    assert raw.version() == resp.content
    assert raw.running() is True
    assert client.version() == resp.json()["version"]


def test_create_list_show_delete_proxy(proxy_server: ProxyServer, echo: EchoServer) -> None:
    resp = api(proxy_server, "POST", "/proxies", {"name": "db", "listen": "127.0.0.1:0", "upstream": echo.address})
    assert resp.status_code == 201
    created = resp.json()
    assert list(created) == ["name", "listen", "upstream", "enabled", "toxics"]
    assert created["name"] == "db" and created["enabled"] is True and created["toxics"] == []
    host, port = created["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert round_trip(created["listen"], b"hello") < 1.0

    listing = api(proxy_server, "GET", "/proxies").json()
    assert listing == {"db": created}
    assert api(proxy_server, "GET", "/proxies/db").json() == created

    assert api(proxy_server, "DELETE", "/proxies/db").status_code == 204
    assert refused(created["listen"])
    assert_error(api(proxy_server, "GET", "/proxies/db"), 404, "proxy not found")
    assert_error(api(proxy_server, "DELETE", "/proxies/db"), 404, "proxy not found")


def test_disabled_proxy_keeps_the_listen_it_was_given(proxy_server: ProxyServer, client: ToxiproxyClient,
                                                      echo: EchoServer) -> None:
    made = client.create_proxy("off", listen="127.0.0.1:0", upstream=echo.address, enabled=False)
    assert made["enabled"] is False and made["listen"] == "127.0.0.1:0"
    on = client.update_proxy("off", enabled=True)
    assert on["enabled"] is True and not on["listen"].endswith(":0")
    round_trip(on["listen"])


def test_update_listen_and_upstream(proxy_server: ProxyServer, client: ToxiproxyClient, echo: EchoServer) -> None:
    other = EchoServer()
    try:
        made = client.create_proxy("mv", listen="127.0.0.1:0", upstream="127.0.0.1:1")
        with connect(made["listen"]) as sock:  # upstream refuses: the proxy drops the client
            assert closed_by_peer(sock)
        moved = client.update_proxy("mv", upstream=other.address)
        assert moved["listen"] == made["listen"] and moved["upstream"] == other.address
        round_trip(moved["listen"], b"abc")
        assert bytes(other.received) == b"abc"
        relisten = api(proxy_server, "PATCH", "/proxies/mv", {"listen": "127.0.0.2:0"}).json()
        assert relisten["listen"].startswith("127.0.0.2:") and relisten["enabled"] is True
        assert refused(made["listen"])
        round_trip(relisten["listen"])
    finally:
        other.close()


def test_proxy_errors(proxy_server: ProxyServer, echo: EchoServer) -> None:
    good = {"name": "dup", "listen": "127.0.0.1:0", "upstream": echo.address}
    assert api(proxy_server, "POST", "/proxies", good).status_code == 201
    assert_error(api(proxy_server, "POST", "/proxies", good), 409, "proxy already exists")
    assert_error(api(proxy_server, "POST", "/proxies", {"name": "x", "listen": "127.0.0.1:0"}), 400,
                 "missing required field: upstream")
    assert_error(api(proxy_server, "POST", "/proxies", {"upstream": echo.address}), 400,
                 "missing required field: name")
    resp = api(proxy_server, "POST", "/proxies", raw=b'{"name": "x", ')
    assert resp.status_code == 400 and resp.json()["error"].startswith("bad request body: ")
    assert_error(api(proxy_server, "POST", "/proxies", raw=b""), 400, "bad request body: EOF")
    resp = api(proxy_server, "POST", "/proxies", {"name": "x", "upstream": echo.address, "enabled": "yes"})
    assert resp.status_code == 400 and "enabled" in resp.json()["error"]
    resp = api(proxy_server, "POST", "/proxies", {"name": "x", "upstream": "no-port"})
    assert resp.status_code == 400 and "HOST:PORT" in resp.json()["error"]
    assert_error(api(proxy_server, "POST", "/proxies/nope", {"enabled": False}), 404, "proxy not found")
    # Error bodies are Go's http.Error: JSON plus a newline, served as text.
    resp = api(proxy_server, "GET", "/proxies/nope")
    assert resp.text.endswith("}\n") and resp.headers["Content-Type"].startswith("text/plain")
    assert_serving(proxy_server, echo)


def test_listen_address_in_use_is_500_and_the_server_goes_on(proxy_server: ProxyServer, echo: EchoServer) -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        port = holder.getsockname()[1]
        resp = api(proxy_server, "POST", "/proxies", {"name": "busy", "listen": f"127.0.0.1:{port}",
                                                       "upstream": echo.address})
        assert resp.status_code == 500
        assert resp.json() == {"error": f"listen tcp 127.0.0.1:{port}: bind: address already in use", "status": 500}
        assert_error(api(proxy_server, "GET", "/proxies/busy"), 404, "proxy not found")
    finally:
        holder.close()
    assert_serving(proxy_server, echo)


def test_toxic_endpoints(proxy_server: ProxyServer, echo_proxy: dict[str, Any]) -> None:
    resp = api(proxy_server, "POST", "/proxies/echo/toxics", {"type": "latency", "attributes": {"latency": 20}})
    assert resp.status_code == 200
    toxic = resp.json()
    assert list(toxic) == ["attributes", "name", "type", "stream", "toxicity"]
    assert toxic == {"attributes": {"latency": 20, "jitter": 0}, "name": "latency_downstream", "type": "latency",
                     "stream": "downstream", "toxicity": 1}
    up = api(proxy_server, "POST", "/proxies/echo/toxics",
             {"name": "slow-up", "type": "bandwidth", "stream": "upstream", "toxicity": 0.5,
              "attributes": {"rate": 100}}).json()
    assert up["toxicity"] == 0.5 and up["stream"] == "upstream"
    assert api(proxy_server, "GET", "/proxies/echo/toxics").json() == [up, toxic]  # upstream chain first
    assert api(proxy_server, "GET", "/proxies/echo/toxics/slow-up").json() == up
    assert api(proxy_server, "GET", "/proxies/echo").json()["toxics"] == [up, toxic]

    updated = api(proxy_server, "PATCH", "/proxies/echo/toxics/latency_downstream",
                  {"attributes": {"jitter": 5}}).json()
    assert updated["attributes"] == {"latency": 20, "jitter": 5} and updated["toxicity"] == 1
    updated = api(proxy_server, "POST", "/proxies/echo/toxics/latency_downstream", {"toxicity": 0.25}).json()
    assert updated["attributes"] == {"latency": 20, "jitter": 5} and updated["toxicity"] == 0.25

    assert api(proxy_server, "DELETE", "/proxies/echo/toxics/slow-up").status_code == 204
    assert_error(api(proxy_server, "DELETE", "/proxies/echo/toxics/slow-up"), 404, "toxic not found")
    assert_error(api(proxy_server, "GET", "/proxies/echo/toxics/slow-up"), 404, "toxic not found")
    assert_error(api(proxy_server, "POST", "/proxies/echo/toxics/slow-up", {"toxicity": 1}), 404, "toxic not found")
    assert_error(api(proxy_server, "GET", "/proxies/nope/toxics"), 404, "proxy not found")
    assert_error(api(proxy_server, "POST", "/proxies/nope/toxics", {"type": "latency"}), 404, "proxy not found")


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"type": "latency"}, 409, "toxic already exists"),
    ({"type": "teleport"}, 400, "invalid toxic type"),
    ({"type": "latency", "name": "x", "stream": "sideways"}, 400,
     "stream was invalid, can be either upstream or downstream"),
    ({"type": "latency", "name": "x", "attributes": {"latency": -5}}, 400,
     "invalid toxic attributes: latency latency must be >= 0 (milliseconds), got -5"),
    ({"type": "latency", "name": "x", "attributes": {"latancy": 5}}, 400,
     "invalid toxic attributes: unknown attribute 'latancy' for latency (known: latency, jitter)"),
    ({"type": "bandwidth", "name": "x", "attributes": {"rate": 0}}, 400,
     "invalid toxic attributes: bandwidth rate must be > 0 (KB/s), got 0"),
    ({"type": "bandwidth", "name": "x"}, 400, "invalid toxic attributes: bandwidth needs attribute rate (> 0, KB/s)"),
    ({"type": "slicer", "name": "x", "attributes": {"average_size": 0}}, 400,
     "invalid toxic attributes: slicer average_size must be > 0 (bytes), got 0"),
    ({"type": "slicer", "name": "x", "attributes": {"average_size": 10, "size_variation": 10}}, 400,
     "invalid toxic attributes: slicer size_variation (10) must be smaller than average_size (10)"),
    ({"type": "drop", "name": "x", "attributes": {"percent": 101}}, 400,
     "invalid toxic attributes: drop percent must be >= 0 and <= 100 (percent of chunks), got 101"),
    ({"type": "timeout", "name": "x", "toxicity": 1.5}, 400,
     "invalid toxicity 1.5: must be between 0 and 1 (the share of connections affected)"),
    ({"type": "latency", "name": "x", "attributes": {"latency": "100"}}, 400,
     "bad request body: attribute latency of latency must be a number (milliseconds), got '100'"),
    ({"type": "latency", "name": "x", "attributes": {"latency": 1.5}}, 400,
     "bad request body: attribute latency of latency must be a whole number (milliseconds), got 1.5"),
])
def test_bad_toxics_are_refused(proxy_server: ProxyServer, echo_proxy: dict[str, Any], echo: EchoServer,
                                body: dict[str, Any], status: int, message: str) -> None:
    api(proxy_server, "POST", "/proxies/echo/toxics", {"type": "latency", "attributes": {"latency": 1}})
    assert_error(api(proxy_server, "POST", "/proxies/echo/toxics", body), status, message)
    assert [t["name"] for t in api(proxy_server, "GET", "/proxies/echo/toxics").json()] == ["latency_downstream"]
    assert_serving(proxy_server, echo)


def test_bad_json_and_bad_updates(proxy_server: ProxyServer, echo_proxy: dict[str, Any], echo: EchoServer) -> None:
    resp = api(proxy_server, "POST", "/proxies/echo/toxics", raw=b"{not json")
    assert resp.status_code == 400 and resp.json()["error"].startswith("bad request body: ")
    resp = api(proxy_server, "POST", "/proxies/echo/toxics", raw=b'{"type": "latency", "attributes": {"latency": NaN}}')
    assert resp.status_code == 400
    api(proxy_server, "POST", "/proxies/echo/toxics", {"type": "latency", "attributes": {"latency": 10}})
    assert_error(api(proxy_server, "POST", "/proxies/echo/toxics/latency_downstream",
                     {"attributes": {"jitter": -1}}), 400,
                 "invalid toxic attributes: latency jitter must be >= 0 (milliseconds), got -1")
    assert api(proxy_server, "GET", "/proxies/echo/toxics/latency_downstream").json()["attributes"] == {
        "latency": 10, "jitter": 0}
    resp = api(proxy_server, "POST", "/populate", {"name": "not-a-list"})
    assert resp.status_code == 400 and resp.json()["error"].startswith("bad request body: ")
    assert_serving(proxy_server, echo)


def test_routes_methods_and_browsers(proxy_server: ProxyServer) -> None:
    resp = api(proxy_server, "GET", "/nothing/here")
    assert resp.status_code == 404 and resp.text == "404 page not found\n"
    assert api(proxy_server, "DELETE", "/proxies").status_code == 405
    assert api(proxy_server, "PUT", "/version").status_code == 405
    resp = api(proxy_server, "GET", "/proxies", headers={"User-Agent": "Mozilla/5.0"})
    assert resp.status_code == 403 and resp.text == "User agent not allowed\n"


def test_keep_alive_serves_many_requests_on_one_connection(proxy_server: ProxyServer) -> None:
    with requests.Session() as session:
        for _ in range(20):
            assert session.get(proxy_server.url + "/version", timeout=5).status_code == 200
    with socket.create_connection((proxy_server.host, proxy_server.port), timeout=5) as sock:
        req = b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(req + req + b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 3


def test_populate_creates_keeps_replaces_and_reports_errors(proxy_server: ProxyServer, client: ToxiproxyClient,
                                                            echo: EchoServer) -> None:
    first = api(proxy_server, "POST", "/populate", [
        {"name": "a", "listen": "127.0.0.1:0", "upstream": echo.address},
        {"name": "b", "listen": "127.0.0.1:0", "upstream": echo.address, "enabled": False},
    ])
    assert first.status_code == 201
    a, b = first.json()["proxies"]
    assert a["enabled"] is True and b == {"name": "b", "listen": "127.0.0.1:0", "upstream": echo.address,
                                          "enabled": False, "toxics": []}
    client.add_toxic("a", "latency", {"latency": 1})
    again = client.populate([{"name": "a", "listen": a["listen"], "upstream": echo.address},
                             {"name": "b", "listen": "127.0.0.2:0", "upstream": echo.address}])
    assert again[0]["toxics"] and again[0]["listen"] == a["listen"]  # unchanged: kept with its toxic
    assert again[1]["enabled"] is True and again[1]["listen"].startswith("127.0.0.2:")
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        busy = f"127.0.0.1:{holder.getsockname()[1]}"
        resp = api(proxy_server, "POST", "/populate", [
            {"name": "c", "listen": "127.0.0.1:0", "upstream": echo.address},
            {"name": "d", "listen": busy, "upstream": echo.address},
        ])
        body = resp.json()
        assert resp.status_code == 500 and body["status"] == 500 and "address already in use" in body["error"]
        assert [p["name"] for p in body["proxies"]] == ["c"]
    finally:
        holder.close()
    assert_error(api(proxy_server, "POST", "/populate", [{"name": "e", "upstream": echo.address}, {"name": "f"}]),
                 400, "missing required field: upstream at proxy 2")
    assert "e" not in client.proxies()


def test_reset_enables_everything_and_removes_toxics(proxy_server: ProxyServer, client: ToxiproxyClient,
                                                     echo: EchoServer) -> None:
    one = client.create_proxy("one", "127.0.0.1:0", echo.address)
    client.create_proxy("two", "127.0.0.1:0", echo.address)
    client.add_toxic("one", "latency", {"latency": 500})
    client.update_proxy("two", enabled=False)
    assert api(proxy_server, "POST", "/reset").status_code == 204
    state = client.proxies()
    assert all(p["enabled"] and p["toxics"] == [] for p in state.values())
    assert round_trip(one["listen"]) < 0.4


def test_toxiproxy_python_objects_work_unchanged(raw: toxiproxy.Toxiproxy, echo: EchoServer) -> None:
    proxy = raw.create(upstream=echo.address, name="tp", listen="127.0.0.1:0")
    assert proxy.name == "tp" and proxy.enabled is True and not proxy.listen.endswith(":0")
    with pytest.raises(ProxyExists):
        raw.create(upstream=echo.address, name="tp")
    assert set(raw.proxies()) == {"tp"}
    fetched = raw.get_proxy("tp")
    assert fetched is not None and fetched.listen == proxy.listen

    proxy.add_toxic(type="latency", attributes={"latency": 100})
    proxy.add_toxic(name="cut", type="limit_data", stream="upstream", attributes={"bytes": 1000})
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "cut"}
    assert toxics["cut"].stream == "upstream" and toxics["cut"].attributes == {"bytes": 1000}
    assert round_trip(proxy.listen) >= 0.1
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="latency", attributes={"latency": 1})
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="nonsense")
    assert proxy.destroy_toxic("latency_downstream") is True
    assert proxy.get_toxic("latency_downstream") is None
    with pytest.raises(NotFound):
        proxy.destroy_toxic("latency_downstream")

    with proxy.down():
        assert raw.get_proxy("tp").enabled is False
        assert refused(proxy.listen)
    assert raw.get_proxy("tp").enabled is True
    assert round_trip(proxy.listen) < 0.1

    assert raw.reset() is True
    assert raw.get_proxy("tp").toxics() == {}
    populated = raw.populate([{"name": "tp2", "upstream": echo.address, "listen": "127.0.0.1:0"}])
    assert [p.name for p in populated] == ["tp2"]
    raw.destroy_all()
    assert raw.proxies() == {}


def test_a_proxy_carries_data_both_ways_in_order(echo_proxy: dict[str, Any]) -> None:
    payload = bytes(range(256)) * 4096
    with connect(echo_proxy["listen"]) as sock:
        sock.sendall(payload[:1000])
        assert recv_exact(sock, 1000) == payload[:1000]
        sock.sendall(payload)
        assert recv_exact(sock, len(payload)) == payload


def test_chunked_request_bodies(proxy_server: ProxyServer, echo: EchoServer) -> None:
    body = json.dumps({"name": "chunky", "listen": "127.0.0.1:0", "upstream": echo.address}).encode()
    with socket.create_connection((proxy_server.host, proxy_server.port), timeout=5) as sock:
        parts = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:10], body[10:]))
        sock.sendall(b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     + parts + b"0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 201 Created")
    assert api(proxy_server, "GET", "/proxies/chunky").json()["upstream"] == echo.address
