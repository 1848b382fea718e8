"""Helpers shared by the RDS/PostgreSQL tests: connections, unique names, a writer recording acknowledged ids."""
from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.rds.postgres import PgCluster

MASTER, PASSWORD, DB = "master", "s3cret-pw", "app"
_names = itertools.count(1)


def connect(cluster: PgCluster, **kw: Any) -> Any:
    import psycopg

    return psycopg.connect(cluster.dsn(MASTER, PASSWORD, DB), autocommit=True, connect_timeout=5, **kw)


def next_name() -> str:
    return f"t{next(_names)}"


class Writer:
    """A thread inserting increasing ids into ``t`` through ``connect()``; records each acknowledged id (and
    when). ``op_timeout``: each INSERT fails after this long (a client-side timeout), then it reconnects."""

    def __init__(self, connect: Callable[[], Any], *, limit: int = 100_000, op_timeout: float | None = None) -> None:
        self.connect = connect
        self.op_timeout = op_timeout
        self.acked: list[int] = []
        self.acked_at: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.limit = limit
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def _run(self) -> None:
        n = 0
        conn = None
        while not self.stop.is_set() and n < self.limit:
            try:
                if conn is None:
                    conn = self.connect()
                n += 1
                if self.op_timeout is None:
                    conn.execute("INSERT INTO t (id) VALUES (%s)", (n,))
                else:
                    with Deadline(conn, self.op_timeout):
                        conn.execute("INSERT INTO t (id) VALUES (%s)", (n,))
                self.acked.append(n)
                self.acked_at.append(time.monotonic())
            except Exception as exc:
                self.errors.append(type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                self.stop.wait(0.01)
        if conn is not None:
            conn.close()

    def finish(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self.thread.join(timeout)


class Deadline:
    """A client-side timeout for one statement: when it expires the connection's socket is shut down, so a
    statement hanging on a blackholed server fails (as a driver's socket timeout would) instead of hanging."""

    def __init__(self, conn: Any, seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        import socket

        self.fired = True
        try:
            sock = socket.socket(fileno=os.dup(self.conn.pgconn.socket))
        except OSError:
            return
        with sock:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def resolve(name: str) -> str:
    """The address ``name`` resolves to for a client of this process (dbdrill's DNS when the resolver is on)."""
    return str(socket.getaddrinfo(name, 5432, type=socket.SOCK_STREAM)[0][4][0])
