"""Helpers shared by the DNS tests: dnspython queries (a client that is not ours) and loopback targets."""
from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from harness.dns.server import DnsServer


def ask(server: DnsServer, name: str, rtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    """One query with dnspython (a client that is not ours)."""
    host, port = server.address
    q = dns.message.make_query(name, rtype)
    if tcp:
        return dns.query.tcp(q, host, port=port, timeout=5)
    return dns.query.udp(q, host, port=port, timeout=5, ignore_trailing=True)


def values(msg: dns.message.Message, rtype: str = "A") -> list[str]:
    return [item.to_text() for rrset in msg.answer if dns.rdatatype.to_text(rrset.rdtype) == rtype for item in rrset]


def rcode(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())


def authoritative(msg: dns.message.Message) -> bool:
    return bool(msg.flags & dns.flags.AA)


class TcpTarget:
    """A loopback listener the test switches off and on (same address and port) and that counts accepts."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.accepted: list[tuple[str, int]] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TcpTarget:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            self.accepted.append(peer)
            conn.close()

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=5)


class HttpTarget:
    """A loopback HTTP server whose status and body the test sets; records the Host headers it saw."""

    def __init__(self, host: str) -> None:
        self.status = 200
        self.body = b"ok"
        self.hosts: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hosts.append(self.headers.get("Host", ""))
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
