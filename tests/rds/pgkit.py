"""Helpers shared by the RDS/PostgreSQL tests: connections, unique names, a writer recording acknowledged ids."""
from __future__ import annotations

import itertools
import threading
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
    """A thread inserting increasing ids into ``t`` through ``connect()``; records each acknowledged id."""

    def __init__(self, connect: Callable[[], Any], *, limit: int = 100_000) -> None:
        self.connect = connect
        self.acked: list[int] = []
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
                conn.execute("INSERT INTO t (id) VALUES (%s)", (n,))
                self.acked.append(n)
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
