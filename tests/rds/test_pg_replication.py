"""Streaming replication: async standby with measured lag, synchronous standby that commits wait for,
promotion, retargeting to a new upstream, replay pause and apply delay."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from harness.errors import HarnessError
from harness.rds import replication as repl
from harness.rds.postgres import PgCluster, PgEngine
from harness.wait import wait_until
from tests.rds.pgkit import connect, next_name


@pytest.fixture
def primary(new_cluster: Callable[..., PgCluster]) -> PgCluster:
    c = new_cluster()
    with connect(c) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    return c


def standby(engine: PgEngine, track: Callable[[PgCluster], PgCluster], source: PgCluster, **kw: object) -> PgCluster:
    return track(repl.create_standby(engine, source, next_name(), **kw))  # type: ignore[arg-type]


def count(c: PgCluster) -> int:
    with connect(c) as conn:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


def test_async_standby_receives_writes_with_measured_lag(engine: PgEngine, track: Callable[[PgCluster], PgCluster],
                                                         primary: PgCluster) -> None:
    s = standby(engine, track, primary)
    assert s.in_recovery() and s.host != primary.host
    status = {r["application_name"]: r for r in repl.replication_status(primary)}
    assert status[s.name]["state"] == "streaming" and status[s.name]["sync_state"] == "async"
    with connect(primary) as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        t0 = time.perf_counter()
        took = repl.wait_caught_up(primary, s)
    assert count(s) == 1000
    assert 0 <= took <= time.perf_counter() - t0
    lag = repl.lag(primary, s)
    assert lag.replay_bytes == 0 and lag.state == "streaming"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), connect(s) as conn:
        conn.execute("INSERT INTO t VALUES (5000)")


def test_sync_standby_holds_commits_until_it_has_them(engine: PgEngine, track: Callable[[PgCluster], PgCluster],
                                                      primary: PgCluster) -> None:
    s = standby(engine, track, primary, sync=True)
    status = {r["application_name"]: r for r in repl.replication_status(primary)}
    assert status[s.name]["sync_state"] == "sync"
    with connect(primary) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    # Acknowledged on the primary means flushed on the standby.
    assert repl.lag(primary, s).receive_bytes == 0
    s.stop()
    done = threading.Event()

    def write() -> None:
        with connect(primary) as conn:
            conn.execute("INSERT INTO t VALUES (2)")
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert not done.wait(0.5), "a commit was acknowledged with its synchronous standby down"
    repl.set_sync_standbys(primary, [])
    assert done.wait(10), "the commit should complete once replication is asynchronous"
    writer.join(5)


def test_promote_makes_a_writable_primary_that_no_longer_follows(
        engine: PgEngine, track: Callable[[PgCluster], PgCluster], primary: PgCluster) -> None:
    s = standby(engine, track, primary)
    with connect(primary) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    repl.wait_caught_up(primary, s)
    took = repl.promote(s)
    assert took < 10 and not s.in_recovery()
    with connect(s) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    with connect(primary) as conn:
        conn.execute("INSERT INTO t VALUES (3)")
    with connect(s) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")] == [1, 2]
    assert repl.replication_status(primary) == []
    with pytest.raises(HarnessError, match="not a standby"):
        repl.promote(s)


def test_retarget_follows_the_new_primary(engine: PgEngine, track: Callable[[PgCluster], PgCluster],
                                          primary: PgCluster) -> None:
    a = standby(engine, track, primary)
    b = standby(engine, track, primary)
    with connect(primary) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    repl.wait_caught_up(primary, a)
    repl.wait_caught_up(primary, b)
    primary.stop()  # a clean stop ships all WAL: both standbys end at the same place
    repl.promote(a)
    repl.retarget(b, a.host, a.port)
    repl.wait_streaming(a, b)
    with connect(a) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    repl.wait_caught_up(a, b)
    assert count(b) == 2


def test_paused_replay_goes_stale_then_catches_up(engine: PgEngine, track: Callable[[PgCluster], PgCluster],
                                                  primary: PgCluster) -> None:
    s = standby(engine, track, primary)
    repl.pause_replay(s)
    assert repl.replay_paused(s)
    with connect(primary) as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
    # Received but not applied: the standby reads stale data.
    wait_until(lambda: repl.lag(primary, s).receive_bytes == 0, 10, what="WAL to arrive")
    assert count(s) == 0
    assert repl.lag(primary, s).replay_bytes > 0
    repl.resume_replay(s)
    repl.wait_caught_up(primary, s)
    assert count(s) == 100 and not repl.replay_paused(s)


def test_apply_delay_is_real_lag(engine: PgEngine, track: Callable[[PgCluster], PgCluster],
                                 primary: PgCluster) -> None:
    s = standby(engine, track, primary)
    repl.set_apply_delay(s, 1.5)
    with connect(primary) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    t0 = time.perf_counter()
    wait_until(lambda: count(s) == 1, 10, interval=0.01, what="the delayed row")
    seen = time.perf_counter() - t0
    assert 1.4 <= seen < 6, seen
    repl.set_apply_delay(s, None)
    with connect(primary) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    assert repl.wait_caught_up(primary, s) < 1.0
