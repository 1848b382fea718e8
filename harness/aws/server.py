"""A small threaded HTTP/1.1 server with keep-alive, one thread per connection, for the emulated AWS API.
Handlers may also close a connection abruptly (RST) or hold a request unanswered, as a cut network does."""
from __future__ import annotations

import contextlib
import http
import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from harness.errors import ServiceError

logger = logging.getLogger(__name__)

_MAX_LINE = 65536
_MAX_HEADERS = 200
_READ_TIMEOUT = 30.0


class CloseConnection(Exception):
    """Raised by a handler: drop the connection without answering; ``rst`` resets it (SO_LINGER 0)."""

    def __init__(self, rst: bool = True) -> None:
        super().__init__("close connection")
        self.rst = rst


@dataclass
class HttpRequest:
    method: str
    target: str  # path?query as sent
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    client: tuple[str, int]
    server: tuple[str, int]
    _lower: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name, value in self.headers:
            key = name.lower()
            self._lower[key] = f"{self._lower[key]}, {value}" if key in self._lower else value

    def header(self, name: str, default: str = "") -> str:
        return self._lower.get(name.lower(), default)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    def set_header(self, name: str, value: str) -> None:
        low = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != low]
        self.headers.append((name, value))


Handler = Callable[[HttpRequest], HttpResponse]


class _BadRequest(Exception):
    pass


def _read_line(rfile: IO[bytes]) -> bytes:
    line = rfile.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _BadRequest("line too long")
    return line


def _read_chunked(rfile: IO[bytes]) -> bytes:
    parts: list[bytes] = []
    for _ in range(1_000_000):
        size_line = _read_line(rfile).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise _BadRequest(f"bad chunk size {size_line!r}") from exc
        if size == 0:
            while _read_line(rfile).strip():  # trailers
                pass
            return b"".join(parts)
        chunk = rfile.read(size)
        if len(chunk) < size:
            raise ConnectionError("client closed inside a chunk")
        parts.append(chunk)
        rfile.read(2)
    raise _BadRequest("too many chunks")


def reset_socket(sock: socket.socket) -> None:
    """Close with RST instead of FIN: the peer sees 'connection reset by peer'."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0 picks one). ``start()`` returns once listening."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0, *, name: str = "http",
                 idle_timeout: float = 120.0) -> None:
        self.handler = handler
        self.name = name
        self.idle_timeout = idle_timeout
        self._bind = (host, port)
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.address: tuple[str, int] = (host, port)
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    def start(self) -> HttpServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(self._bind)
        except OSError as exc:
            sock.close()
            raise ServiceError(f"{self.name}: cannot listen on {self._bind[0]}:{self._bind[1]}: {exc}. "
                               "Pick another port or stop what uses it.", obj=self) from exc
        sock.listen(256)
        self._listener = sock
        self.address = sock.getsockname()[:2]
        self._stopping.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)
        self._accept_thread.start()
        logger.debug("%s listening on %s", self.name, self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            conns = dict(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        for thread in conns.values():
            thread.join(timeout / max(len(conns), 1))
        self._listener = None

    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-conn", daemon=True)
            with self._lock:
                self._conns[conn] = thread
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        rst = False
        try:
            rst = self._serve_requests(conn)
        except (ConnectionError, TimeoutError, OSError):
            pass
        except Exception:
            logger.exception("%s: connection handler failed", self.name)
        finally:
            with self._lock:
                self._conns.pop(conn, None)
            if rst:
                reset_socket(conn)
            else:
                with contextlib.suppress(OSError):
                    conn.close()

    def _serve_requests(self, conn: socket.socket) -> bool:
        """Answer requests until the peer or a handler closes; True means close with RST."""
        client = conn.getpeername()[:2]
        server = conn.getsockname()[:2]
        rfile: IO[bytes] = conn.makefile("rb", buffering=65536)  # type: ignore[assignment]
        try:
            for _ in range(10_000_000):
                conn.settimeout(self.idle_timeout)
                line = _read_line(rfile)
                if not line:
                    return False
                conn.settimeout(_READ_TIMEOUT)
                if not line.strip():
                    continue
                try:
                    request = self._read_request(line, rfile, conn, client, server)
                except _BadRequest as exc:
                    self._send(conn, HttpResponse(400, [("Content-Type", "text/plain")], str(exc).encode()),
                               "GET", keep_alive=False)
                    return False
                keep_alive = self._keep_alive(request)
                try:
                    response = self.handler(request)
                except CloseConnection as exc:
                    return exc.rst
                if self._stopping.is_set():
                    return True
                self._send(conn, response, request.method, keep_alive=keep_alive)
                if not keep_alive:
                    return False
            return False
        finally:
            rfile.close()

    def _read_request(self, line: bytes, rfile: IO[bytes], conn: socket.socket, client: tuple[str, int],
                      server: tuple[str, int]) -> HttpRequest:
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequest(f"bad request line {line[:100]!r}")
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        for _ in range(_MAX_HEADERS + 1):
            hline = _read_line(rfile)
            if hline in (b"\r\n", b"\n", b""):
                break
            name, sep, value = hline.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest(f"bad header line {hline[:100]!r}")
            headers.append((name.strip(), value.strip()))
        else:
            raise _BadRequest("too many headers")
        request = HttpRequest(method, target, version, headers, b"", client, server)
        if request.header("expect").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in request.header("transfer-encoding").lower():
            request.body = _read_chunked(rfile)
        else:
            length_text = request.header("content-length", "0") or "0"
            try:
                length = int(length_text)
            except ValueError as exc:
                raise _BadRequest(f"bad Content-Length {length_text!r}") from exc
            body = rfile.read(length) if length > 0 else b""
            if len(body) < length:
                raise ConnectionError("client closed inside the body")
            request.body = body
        return request

    @staticmethod
    def _keep_alive(request: HttpRequest) -> bool:
        conn_header = request.header("connection").lower()
        if request.version == "HTTP/1.0":
            return "keep-alive" in conn_header
        return "close" not in conn_header

    @staticmethod
    def _send(conn: socket.socket, response: HttpResponse, method: str, *, keep_alive: bool) -> None:
        try:
            reason = http.HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        has_length = False
        for name, value in response.headers:
            low = name.lower()
            if low in ("connection", "transfer-encoding"):
                continue
            if low == "content-length":
                has_length = True
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {len(response.body)}")
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        body = b"" if method == "HEAD" or response.status in (204, 304) else response.body
        conn.sendall(head + body)
