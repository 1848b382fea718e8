"""The PostgreSQL client the RDS drills drive: one pooled connection per worker thread, reconnecting (and
so resolving the endpoint name again) after an error, every statement bounded by a client-side timeout.
The connect function is the app's (the ``rds_drill_connect`` fixture)."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from suites.history import History

logger = logging.getLogger(__name__)

TABLE = "dbdrill_drill"

Connect = Callable[..., Any]


def default_connect(host: str, port: int, user: str, password: str, dbname: str) -> Any:
    """A careful app's connect: short connect timeout, TCP keepalives and user timeout, autocommit, no
    server-side prepared statements (so it also works through PgBouncer in transaction mode)."""
    import psycopg

    return psycopg.connect(host=host, port=port, user=user, password=password, dbname=dbname, autocommit=True,
                           connect_timeout=2, tcp_user_timeout=2000, keepalives=1, keepalives_idle=1,
                           keepalives_interval=1, keepalives_count=2, prepare_threshold=None)


@contextlib.contextmanager
def deadline(conn: Any, seconds: float) -> Iterator[None]:
    """Bound a statement in time. A blackholed server (a fenced primary) ACKs nothing and answers nothing;
    libpq would wait forever, so after ``seconds`` the socket is shut down under it and the statement fails."""
    def cut() -> None:
        with contextlib.suppress(Exception):
            fd = conn.pgconn.socket
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def definitely_failed(exc: BaseException) -> bool:
    """The server answered with an error for an autocommit statement (read-only transaction on a demoted
    writer, a constraint...): it did not commit. Connection-level errors (class 08), shutdowns (57P) and lost
    connections without an answer are indeterminate."""
    state = getattr(exc, "sqlstate", None)
    return bool(state) and not str(state).startswith(("08", "57P"))


@dataclass
class Target:
    host: str
    port: int
    user: str
    password: str
    dbname: str


class PgApp:
    """Writes increasing ids and reads them back, recording every operation on ``history``."""

    def __init__(self, history: History, target: Target, connect: Connect = default_connect, *,
                 timeout: float = 2.0, endpoint: str | None = None) -> None:
        self.history = history
        self.target = target
        self.connect_fn = connect
        self.timeout = timeout
        self.endpoint = endpoint or target.host
        self._local = threading.local()

    def setup(self) -> None:
        with self._connect() as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")

    def _connect(self) -> Any:
        t = self.target
        return self.connect_fn(t.host, t.port, t.user, t.password, t.dbname)

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = self._connect()
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self, process: int | str, f: str, value: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self.history.op(process, f, value=value, endpoint=self.endpoint) as op:
            try:
                conn = self._conn()
            except Exception as exc:
                op.fail(exc)  # never reached the server: the write did not happen
                return None
            op.set_node(conn.info.hostaddr)
            try:
                with deadline(conn, self.timeout):
                    row = conn.execute(sql, params).fetchone()
            except Exception as exc:
                self._drop()  # reconnect (and so resolve the name again) next time
                if definitely_failed(exc):
                    op.fail(exc)
                    return None
                raise  # recorded as info: it may or may not have happened
            result = row[0] if row else None
            if f != "write":
                op.ok(set(result or []))
            return result
        return None

    def write(self, process: int | str, value: int) -> None:
        self._run(process, "write", value, f"INSERT INTO {TABLE} (id) VALUES (%s) RETURNING id", (value,))

    def read(self, process: int | str, f: str = "read") -> None:
        self._run(process, f, None, f"SELECT array_agg(id) FROM {TABLE}")

    def final_read(self, attempts: int = 50) -> None:
        """The drill's own read of everything once the system recovered: with the reference client (fresh
        DNS lookup, fresh connection), not the app's, so an app that never recovers is still judged.
        Retried a bounded number of times."""
        oracle = PgApp(self.history, self.target, default_connect, timeout=self.timeout, endpoint=self.endpoint)
        for _ in range(attempts):
            before = len(self.history.operations("final-read"))
            oracle.read("final", "final-read")
            oracle.close()
            ops = self.history.operations("final-read")
            if len(ops) > before and ops[-1].ok:
                return
        raise AssertionError(f"no successful final read from {self.endpoint} in {attempts} attempts")

    def close(self) -> None:
        self._drop()


def failover_workload(drill: Any, app: PgApp, fault: Any, *, at: float = 1.0, duration: float = 0.5,
                      writers: int = 2, readers: int = 1, reader_app: PgApp | None = None) -> None:
    """The common shape of a database failover drill: ``writers`` threads insert increasing ids, ``readers``
    threads read everything back (through ``reader_app`` when given: a reader endpoint), ``fault`` runs ``at``
    s in for ``duration`` s, then the drill waits (bounded by the RTO limit) for writes to resume, and the
    drill's own client makes the final read."""
    from faults.schedule import Nemesis, Step
    from suites.workload import Workload, settle, writes_after

    history = drill.history

    def work(process: int, i: int) -> None:
        if process < writers:
            app.write(process, i * writers + process)
        else:
            (reader_app or app).read(process)

    with drill.progress(), Workload(work, threads=writers + readers, interval=0.01, max_time=300):
        nemesis = Nemesis([Step(at, duration, fault, name=getattr(fault, "name", "fault"))], max_time=300).start()
        if not nemesis.wait(300):
            nemesis.stop()
            raise AssertionError("the fault schedule did not finish within 300 s")
        nemesis.stop()
        nemesis.check()
        drill.schedule = nemesis.schedule()
        healed = history.operations()[-1].invoke_time
        drill.note(recovered_after_heal=settle(writes_after(history, healed, 20), drill.settle_s))
    app.final_read()
    app.close()
    if reader_app is not None:
        reader_app.close()


def aurora_apps(drill: Any, request: Any, connect: Any, identifier: str) -> tuple[Any, PgApp, PgApp]:
    """An Aurora cluster for a drill (writer + 2 readers, through the ``aurora_cluster`` fixture), an app writing
    through its cluster endpoint (its table set up) and one reading through its reader endpoint. With the fast
    profile the limits are seconds, not AWS's 30-60: the failover is at once, then the endpoints' 5 s TTL runs out
    at the latest."""
    if getattr(drill.settings, "time_profile", "fast") == "fast":
        drill.defaults(max_rto=10.0, max_reader_lag=5.0)
    db = request.getfixturevalue("aurora_cluster")(identifier, readers=2)
    login = (db.port, db.user, db.password, db.dbname)
    writer = PgApp(drill.history, Target(db.writer_endpoint, *login), connect)
    writer.setup()
    return db, writer, PgApp(drill.history, Target(db.reader_endpoint, *login), connect)
