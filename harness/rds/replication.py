"""Streaming replication between PgClusters: standbys cloned with pg_basebackup (async or synchronous),
promotion, retargeting to a new upstream, replay pause / apply delay, and lag measurement."""
from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, ServiceError
from harness.rds.pgbin import chown_to_service
from harness.rds.postgres import REPL_USER, PgCluster, PgEngine, quote_conf
from harness.wait import WaitTimeout, wait_until

logger = logging.getLogger(__name__)


def conninfo(engine: PgEngine, host: str, port: int, app_name: str) -> str:
    """primary_conninfo for a standby streaming from ``host:port`` (a proxy address, or a server's own)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(host=host, port=port, user=REPL_USER, password=engine.repl_password,
                         application_name=app_name, connect_timeout=2, keepalives_idle=1, keepalives_interval=1,
                         keepalives_count=3)


def clone_into(cluster: PgCluster, source: PgCluster, *, upstream: tuple[str, int] | None = None,
               apply_delay_ms: int | None = None, timeout: float = 60.0) -> PgCluster:
    """Make ``cluster`` (stopped; its data dir is replaced) a standby of ``source``: a base backup of the running
    source, own config, streaming from ``upstream`` (default: the source's own address), then start it. Used to
    create standbys and to rebuild an old primary as the new standby."""
    if not source.running():
        raise ServiceError(f"cannot clone {cluster.name} from {source.name}: the source is not running", obj=source)
    cluster.stop(mode="immediate", timeout=5)
    shutil.rmtree(cluster.data_dir, ignore_errors=True)
    engine = cluster.engine
    base_backup(source, cluster.data_dir, timeout=timeout)
    host, port = upstream or (source.host, source.port)
    auto = {"primary_conninfo": quote_conf(conninfo(engine, host, port, cluster.name)),
            "recovery_target_timeline": "'latest'"}
    if apply_delay_ms:
        auto["recovery_min_apply_delay"] = f"'{int(apply_delay_ms)}ms'"
    cluster.configure(source.extra_settings, auth=source.auth, auto=auto)
    signal_file = cluster.data_dir / "standby.signal"
    signal_file.touch()
    chown_to_service(signal_file)
    cluster.start(timeout)
    return cluster


# Not copied into a base backup: the source's process state, its WAL (streamed instead) and replication state.
_SKIP = ("postmaster.pid", "postmaster.opts", "backup_label.old", "standby.signal", "recovery.signal",
         "current_logfiles")
_EMPTY = ("pg_wal", "pg_replslot", "pg_stat_tmp", "pg_snapshots", "pg_notify", "pg_serial", "pg_dynshmem",
          "pg_subtrans")


def _copy_live(source: Path, target: Path, timeout: float) -> None:
    """``cp -a`` of a running server's data dir. Files the server removes meanwhile (recycled WAL, temporary
    stats, dropped relations) vanish under the copy: that is fine inside a base backup (WAL replay rebuilds
    what changed, and pg_basebackup ignores vanished files too); any other error is not."""
    proc = subprocess.run(["cp", "-a", str(source), str(target)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 0:
        return
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    if errors and all(line.endswith("No such file or directory") for line in errors):
        logger.debug("base backup of %s: %d file(s) vanished during the copy", source, len(errors))
        return
    raise HarnessError(f"base backup copy of {source} failed (cp exit {proc.returncode}): {proc.stderr[-800:]}")


def base_backup(source: PgCluster, target: Path, *, timeout: float = 60.0) -> None:
    """A low-level base backup of the running ``source`` into ``target``: backup start (fast checkpoint), a
    file copy of the data dir, backup stop, its backup_label written. WAL is not copied: the standby streams it
    from the source (wal_keep_size keeps it). The same thing pg_basebackup does, at file-copy speed."""
    start, stop = ("pg_backup_start(%s, true)", "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)") \
        if source.engine.bins.major >= 15 else \
        ("pg_start_backup(%s, true, false)", "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)")
    with source.admin() as conn:
        conn.execute(f"SELECT {start}", (f"dbdrill clone {target.parent.name}",))
        try:
            _copy_live(source.data_dir, target, timeout)
        finally:
            label, spcmap = conn.execute(stop).fetchone()  # type: ignore[misc]
    for name in _SKIP:
        (target / name).unlink(missing_ok=True)
    for name in _EMPTY:
        directory = target / name
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.is_dir() and entry.name != "archive_status":
                    shutil.rmtree(entry)
                elif entry.is_file():
                    entry.unlink()
    (target / "backup_label").write_text(label)
    files = [target / "backup_label"]
    if spcmap:
        (target / "tablespace_map").write_text(spcmap)
        files.append(target / "tablespace_map")
    for f in files:
        chown_to_service(f)


def create_standby(engine: PgEngine, source: PgCluster, name: str, *, host: str | None = None,
                   upstream: tuple[str, int] | None = None, sync: bool = False, apply_delay_ms: int | None = None,
                   timeout: float = 60.0) -> PgCluster:
    """A new standby of ``source`` on its own address, streaming (from ``upstream`` if given). ``sync``: the
    source waits for it to flush before acknowledging a commit (synchronous_standby_names)."""
    name, root = engine.new_root(name)
    cluster = PgCluster(engine, name, root, host or engine.address(f"pg-{name}"))
    engine.register(cluster)
    try:
        clone_into(cluster, source, upstream=upstream, apply_delay_ms=apply_delay_ms, timeout=timeout)
        if sync:
            set_sync_standbys(source, [cluster.name])
        wait_streaming(source, cluster, timeout=timeout, sync=sync)
    except BaseException:
        engine.drop(cluster)
        raise
    return cluster


def set_sync_standbys(primary: PgCluster, names: list[str], *, all_of: bool = False) -> None:
    """Commits on ``primary`` wait for one of ``names`` (``all_of``: every one of them) to flush (empty list:
    asynchronous again)."""
    quoted = ", ".join('"' + n.replace('"', "") + '"' for n in names)
    value = (f"ANY {len(names)} ({quoted})" if all_of else f"FIRST 1 ({quoted})") if names else ""
    primary.alter_system(synchronous_standby_names=value)


def streaming_standbys(primary: PgCluster) -> set[str]:
    """Application names of the standbys streaming from ``primary`` now."""
    rows = primary.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
    return {str(r[0]) for r in rows}


def wait_streaming(primary: PgCluster, standby: PgCluster, timeout: float = 30.0, *, sync: bool = False) -> None:
    """Until ``primary`` shows ``standby`` streaming in pg_stat_replication (``sync``: as its synchronous
    standby, which the walsender reports once it has read the reloaded setting)."""
    want = ("streaming", "sync") if sync else ("streaming",)
    wait_until(lambda: _state(primary, standby.name)[: len(want)] == want, timeout, interval=0.005,
               what=f"{standby.name} to stream from {primary.name}", ignore=(Exception,))


def _state(primary: PgCluster, app_name: str) -> tuple[str, ...]:
    rows = primary.sql("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s",
                       (app_name,))
    return (str(rows[0][0]), str(rows[0][1])) if rows else ()


def promote(standby: PgCluster, timeout: float = 30.0) -> float:
    """Promote ``standby`` to a writable primary; returns the seconds it took. Its upstream settings are
    cleared, so it never follows its old source again."""
    t0 = time.perf_counter()
    if not standby.in_recovery():
        raise HarnessError(f"{standby.name} is not a standby (not in recovery): nothing to promote", obj=standby)
    standby.sql("SELECT pg_promote(wait => false)")
    try:
        wait_until(lambda: not standby.in_recovery(), timeout, interval=0.002, what=f"{standby.name} to promote",
                   ignore=(Exception,))
    except WaitTimeout as exc:
        err = ServiceError(str(exc), obj=standby)
        err.add_note(standby.executor.log_tail() if standby.executor else "")
        raise err from None
    standby.alter_system(primary_conninfo=None, recovery_min_apply_delay=None, synchronous_standby_names=None)
    return time.perf_counter() - t0


def retarget(standby: PgCluster, host: str, port: int) -> None:
    """Stream from another upstream (a new primary after failover): new primary_conninfo + reload; the WAL
    receiver reconnects and follows the new timeline (recovery_target_timeline = latest)."""
    standby.alter_system(primary_conninfo=conninfo(standby.engine, host, port, standby.name))


def pause_replay(standby: PgCluster) -> None:
    """WAL is still received but no longer applied: reads on the standby go stale."""
    standby.sql("SELECT pg_wal_replay_pause()")


def resume_replay(standby: PgCluster) -> None:
    standby.sql("SELECT pg_wal_replay_resume()")


def replay_paused(standby: PgCluster) -> bool:
    return str(standby.value("SELECT pg_get_wal_replay_pause_state()")) != "not paused"


def set_apply_delay(standby: PgCluster, seconds: float | None) -> None:
    """Apply each commit no earlier than ``seconds`` after it happened on the primary (None: no delay)."""
    standby.alter_system(recovery_min_apply_delay=None if not seconds else f"{int(seconds * 1000)}ms")


@dataclass(frozen=True)
class Lag:
    """How far a standby is behind: WAL bytes not yet received / not yet replayed, and the primary's view
    of the replay lag (pg_stat_replication.replay_lag; None when idle or not connected)."""

    receive_bytes: int
    replay_bytes: int
    replay_seconds: float | None
    state: str | None


def lag(primary: PgCluster, standby: PgCluster) -> Lag:
    current = primary.value("SELECT pg_current_wal_lsn()::text")
    row = standby.sql("SELECT pg_wal_lsn_diff(%s::pg_lsn, coalesce(pg_last_wal_receive_lsn(), '0/0')),"
                      " pg_wal_lsn_diff(%s::pg_lsn, coalesce(pg_last_wal_replay_lsn(), '0/0'))", (current, current))[0]
    stat = primary.sql("SELECT state, extract(epoch FROM replay_lag) FROM pg_stat_replication "
                       "WHERE application_name = %s", (standby.name,))
    state, seconds = (stat[0][0], stat[0][1]) if stat else (None, None)
    return Lag(receive_bytes=max(0, int(row[0])), replay_bytes=max(0, int(row[1])),
               replay_seconds=None if seconds is None else float(seconds), state=state)


def wait_caught_up(primary: PgCluster, standby: PgCluster, timeout: float = 30.0) -> float:
    """Wait until ``standby`` has replayed everything ``primary`` had written when called; seconds taken."""
    t0 = time.perf_counter()
    target = primary.value("SELECT pg_current_wal_lsn()::text")

    def done() -> bool:
        return bool(standby.value("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)))

    wait_until(done, timeout, interval=0.002, what=f"{standby.name} to replay up to {target}", ignore=(Exception,))
    return time.perf_counter() - t0


def replication_status(primary: PgCluster) -> list[dict[str, Any]]:
    """pg_stat_replication of ``primary``: one dict per connected standby."""
    rows = primary.sql("SELECT application_name, state, sync_state, sent_lsn::text, flush_lsn::text, "
                       "replay_lsn::text FROM pg_stat_replication ORDER BY application_name")
    keys = ("application_name", "state", "sync_state", "sent_lsn", "flush_lsn", "replay_lsn")
    return [dict(zip(keys, r, strict=True)) for r in rows]
