"""Real loopback upstreams for the proxy tests: an echo server that records what it received, and a blob
server that sends a fixed payload to each client, plus small socket helpers."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from harness.wait import wait_until


class Upstream:
    """A threaded TCP server on 127.0.0.1; ``handle(conn)`` runs per client in its own thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.address = f"{self.host}:{self.port}"
        self.accepted = 0
        self.received = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                continue
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(30)
        with contextlib.suppress(OSError), conn:
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def record(self, data: bytes) -> None:
        with self._lock:
            self.received += data

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._thread.join(2)
        self.sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()


class EchoServer(Upstream):
    """Echoes every byte back; closes when the client closes."""

    def handle(self, conn: socket.socket) -> None:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            self.record(data)
            conn.sendall(data)


class BlobServer(Upstream):
    """Sends ``payload`` to each client as soon as it connects, then closes."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.sendall(self.payload)


def host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def connect(listen: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(host_port(listen), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def read_all(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> tuple[bytes, list[int]]:
    """Everything until EOF, and the size of each read."""
    buf = bytearray()
    sizes = []
    while len(buf) < limit:
        data = sock.recv(65536)
        if not data:
            break
        sizes.append(len(data))
        buf += data
    return bytes(buf), sizes


def round_trip(listen: str, payload: bytes = b"ping") -> float:
    with connect(listen) as sock:
        t0 = time.perf_counter()
        sock.sendall(payload)
        recv_exact(sock, len(payload))
        return time.perf_counter() - t0


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def refused(listen: str) -> bool:
    try:
        socket.create_connection(host_port(listen), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_refused(listen: str, timeout: float = 5.0) -> None:
    wait_until(lambda: refused(listen), timeout, what=f"{listen} to refuse connections")


def closed_by_peer(sock: socket.socket) -> bool:
    """The next read sees the connection end (FIN or RST), not data."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
