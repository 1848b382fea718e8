"""A tiny set-of-values server for drill-evidence tests, run as a real child process on a loopback address.

Protocol, one line each way: ``ADD v`` -> ``OK``; ``READ`` -> ``VALUES v1,v2,...``.
``--mode durable`` appends every value to the data file before answering OK (survives SIGKILL);
``--mode lazy`` acknowledges at once and writes the file only on SIGTERM (a crash loses acked values).
Usage: kv_server.py HOST PORT DATAFILE MODE
"""
from __future__ import annotations

import signal
import socket
import socketserver
import sys
import threading
from pathlib import Path
from types import FrameType


class Store:
    def __init__(self, path: Path, mode: str) -> None:
        self.path, self.mode = path, mode
        self.lock = threading.Lock()
        self.values: list[str] = path.read_text().split() if path.exists() else []
        self.fh = path.open("a")

    def add(self, value: str) -> None:
        with self.lock:
            self.values.append(value)
            if self.mode == "durable":
                self.fh.write(value + "\n")
                self.fh.flush()

    def read(self) -> str:
        with self.lock:
            return ",".join(self.values)

    def flush_all(self) -> None:
        with self.lock:
            self.path.write_text("".join(v + "\n" for v in self.values))


class Handler(socketserver.StreamRequestHandler):
    store: Store

    def handle(self) -> None:
        for raw in self.rfile:
            line = raw.decode().strip()
            if line.startswith("ADD "):
                self.store.add(line[4:])
                self.wfile.write(b"OK\n")
            elif line == "READ":
                self.wfile.write(f"VALUES {self.store.read()}\n".encode())
            else:
                self.wfile.write(b"ERR unknown command\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> None:
    host, port, path, mode = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    Handler.store = Store(path, mode)
    server = Server((host, port), Handler)

    def term(signum: int, frame: FrameType | None) -> None:
        Handler.store.flush_all()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, term)
    print(f"listening on {host}:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.05)


def request(host: str, port: int, line: str, timeout: float = 2.0) -> str:
    """One request on a fresh connection (so a restarted server is reached at once)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionResetError(f"{host}:{port} closed the connection before answering {line!r}")
            answer += chunk
    return answer.decode().strip()


if __name__ == "__main__":
    main()
