"""PostgreSQL engine: binaries discovery, template clusters on their own address, auth over TCP, trusted
admin socket, crash and restart, running as the postgres user."""
from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from harness.errors import HarnessError, NotInstalledError
from harness.rds import pgbin
from harness.rds.pgbin import find_pg_bin
from harness.rds.postgres import ADMIN_USER, PgCluster, PgEngine, build_template
from tests.rds.pgkit import DB, MASTER, PASSWORD, connect, next_name


def test_finds_the_installed_postgres() -> None:
    bins = find_pg_bin()
    assert bins.major >= 12
    assert (bins.bindir / "postgres").exists()


def test_bogus_pg_bin_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotInstalledError) as err:
        find_pg_bin(tmp_path / "nope")
    msg = str(err.value)
    assert str(tmp_path / "nope") in msg and "postgres" in msg
    assert "apt-get install postgresql" in msg and "--dbdrill-pg-bin" in msg


def test_nothing_installed_lists_what_was_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgbin, "DEBIAN_GLOB", str(tmp_path / "pg" / "*" / "bin"))
    with pytest.raises(NotInstalledError) as err:
        find_pg_bin()
    msg = str(err.value)
    assert "pg_config --bindir: nothing" in msg and "PATH: nothing" in msg
    assert str(tmp_path / "pg" / "*" / "bin") in msg and "apt-get install postgresql" in msg


def test_cluster_serves_master_user_over_tcp(new_cluster: Callable[..., PgCluster]) -> None:
    c = new_cluster()
    assert c.host.startswith("127.") and c.host != "127.0.0.1"
    with connect(c) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t VALUES (1, 'one')")
        assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("one",)
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (MASTER, DB)
        assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(c.dsn(MASTER, "wrong", DB), connect_timeout=5)
    # The superuser exists only behind the trusted socket: over TCP it has no password.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=c.host, port=c.port, user=ADMIN_USER, dbname="postgres", connect_timeout=5)
    assert len(str(c.socket_dir / f".s.PGSQL.{c.port}").encode()) < 107


def test_md5_auth(new_cluster: Callable[..., PgCluster]) -> None:
    c = new_cluster(auth="md5")
    with connect(c) as conn:
        assert conn.execute("SHOW password_encryption").fetchone() == ("md5",)
        stored = c.value("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (MASTER,))
        assert str(stored).startswith("md5")


def test_unknown_auth_is_refused(engine: PgEngine) -> None:
    with pytest.raises(HarnessError, match="scram-sha-256, md5"):
        engine.create_cluster("badauth", auth="password")
    assert "badauth" not in engine.clusters


def test_runs_as_postgres_with_test_double_settings(new_cluster: Callable[..., PgCluster]) -> None:
    c = new_cluster()
    assert c.pid is not None
    status = Path(f"/proc/{c.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    if os.geteuid() == 0:
        assert uid == pwd.getpwnam("postgres").pw_uid
    settings = dict(c.sql("SELECT name, setting FROM pg_settings WHERE name IN "
                          "('fsync', 'wal_retrieve_retry_interval', 'shared_buffers', 'listen_addresses')"))
    assert settings["fsync"] == "off"
    assert settings["wal_retrieve_retry_interval"] == "50"
    assert settings["listen_addresses"] == c.host


def test_crash_and_restart_keeps_committed_rows(new_cluster: Callable[..., PgCluster]) -> None:
    c = new_cluster()
    with connect(c) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 500)")
        c.kill()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert not c.running()
    with pytest.raises(psycopg.OperationalError):
        connect(c)
    c.start()
    with connect(c) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (500,)


def test_template_is_built_once_and_reused(engine: PgEngine) -> None:
    ready = engine.template / "ready"
    before = ready.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = build_template(engine.bins, engine.template_root)
    assert again == engine.template
    assert ready.stat().st_mtime_ns == before
    assert time.perf_counter() - t0 < 0.5


def test_fast_shutdown_and_start_again(new_cluster: Callable[..., PgCluster]) -> None:
    c = new_cluster()
    with connect(c) as conn:
        conn.execute("CREATE TABLE t (id int)")
    c.stop()
    assert not c.running()
    c.start()
    with connect(c) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_master_database_comes_from_the_spare(engine: PgEngine, track: Callable[[PgCluster], PgCluster]) -> None:
    named = track(engine.create_cluster(next_name()))
    named.create_master("owner_a", PASSWORD, "shop")
    plain = track(engine.create_cluster(next_name()))
    plain.create_master("owner_b", PASSWORD, None)
    dbs = "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE NOT datistemplate ORDER BY 1"
    assert named.sql(dbs) == [("postgres", ADMIN_USER), ("shop", "owner_a")]
    assert plain.sql(dbs) == [("postgres", ADMIN_USER)]
    with psycopg.connect(named.dsn("owner_a", PASSWORD, "shop"), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")  # the owner may create tables in its public schema
