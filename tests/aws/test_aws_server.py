"""dbdrill's HTTP/1.1 server over raw sockets: keep-alive, chunked bodies, 100-continue, bad requests, resets."""
from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from harness.aws.server import CloseConnection, HttpRequest, HttpResponse, HttpServer


def _echo(request: HttpRequest) -> HttpResponse:
    if request.path == "/reset":
        raise CloseConnection(rst=True)
    body = f"{request.method} {request.target} {len(request.body)} {request.body[:20]!r}".encode()
    return HttpResponse(200, [("Content-Type", "text/plain")], body)


@pytest.fixture
def server() -> Iterator[HttpServer]:
    srv = HttpServer(_echo, "127.0.0.1", 0, name="test").start()
    yield srv
    srv.stop()


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed early: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        chunk = sock.recv(4096)
        assert chunk, f"closed inside the body: {rest!r}"
        rest += chunk
    return head, rest[:length]


def test_keep_alive_serves_many_requests_on_one_connection(server: HttpServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        for i in range(5):
            sock.sendall(f"POST /x?i={i} HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc".encode())
            head, body = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200") and body.startswith(f"POST /x?i={i} 3".encode())
    assert server.accepted == 1


def test_chunked_body_and_expect_continue(server: HttpServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        _, body = _read_response(sock)
        assert body.startswith(b"PUT /c 11 b'hello world'")
        sock.sendall(b"PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"data")
        _, body = _read_response(sock)
        assert body.startswith(b"PUT /e 4")


def test_http10_and_connection_close_end_the_connection(server: HttpServer) -> None:
    for request in (b"GET /a HTTP/1.0\r\n\r\n", b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n"):
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(request)
            head, _ = _read_response(sock)
            assert b"Connection: close" in head
            assert sock.recv(10) == b""


def test_bad_request_line_is_a_400(server: HttpServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        head, body = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 400") and b"bad request line" in body


def test_handler_can_reset_the_connection(server: HttpServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"GET /reset HTTP/1.1\r\nHost: h\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(100)


def test_stop_frees_the_port(server: HttpServer) -> None:
    address = server.address
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2)
