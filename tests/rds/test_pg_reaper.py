"""A run holding PostgreSQL is SIGKILLed: the server dies with it (parent-death signal), and a server that
escaped is found and killed at the next start — through the run registry, or by the /proc scan when the
registry lost it."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.rds.postgres import PgCluster
from harness.rds.storage import ram_available, reap_stray_postgres, shm_root
from harness.runtime import Runtime
from harness.state import proc_start_time, state_root
from harness.wait import wait_until

INNER = r'''
import os, signal, sys
from pathlib import Path
from harness.rds import postgres
from harness.rds.pgbin import find_pg_bin
from harness.runtime import get_runtime

from harness.rds.storage import data_base_dir
from harness.state import state_root
escape, forget, ram = sys.argv[1] == "escape", sys.argv[2] == "forget", sys.argv[3] == "ram"
if escape:
    class Escaping(postgres.Executor):
        def __init__(self, *a, **kw):
            kw["pdeathsig"] = 0
            super().__init__(*a, **kw)
    postgres.Executor = Escaping
rt = get_runtime()
base = data_base_dir(state_root(), rt.run.path) if ram else rt.run.subdir("rds")
engine = postgres.PgEngine(find_pg_bin(), base, rt.hosts.allocate, template_root=Path(os.environ["TEMPLATES"]))
c = engine.create_cluster("victim")
if forget:
    (rt.run.path / "children" / str(c.pid)).unlink()
Path(os.environ["OUT"]).write_text(f"{c.host} {c.port} {c.pid} {rt.run.path} {c.data_dir}")
signal.pause()
'''


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def gone(pid: int, start: int | None) -> bool:
    return proc_start_time(pid) != start or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return data[data.rindex(")") + 2:].split()[0] == "Z"


@pytest.fixture
def state() -> Iterator[Path]:
    # Not tmp_path: the postgres user must reach the data dirs.
    root = state_root() / "reaper-tests" / uuid.uuid4().hex[:8]
    root.mkdir(parents=True)
    os.chmod(root.parent, 0o755)
    os.chmod(root, 0o755)
    yield root
    reap_stray_postgres(root)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(shm_root(root), ignore_errors=True)
    with contextlib.suppress(OSError):
        root.parent.rmdir()  # only when no other run's test dir is in it


def run_and_kill(state: Path, escape: bool, forget: bool,
                 ram: bool = False) -> tuple[str, int, int, int | None, Path, Path]:
    out = state / "out.txt"
    env = dict(os.environ, OUT=str(out), DBDRILL_STATE_DIR=str(state), TEMPLATES=str(state_root() / "pg-templates"))
    env.pop("PYTEST_XDIST_WORKER", None)
    args = ["escape" if escape else "stay", "forget" if forget else "keep", "ram" if ram else "disk"]
    proc = subprocess.Popen([sys.executable, "-c", INNER, *args], env=env, cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (out.exists() and out.read_text() != "") or proc.poll() is not None, 60,
                   what="the inner run to start postgres")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        host, port, pid, run_dir, data_dir = out.read_text().split()
        assert listening(host, int(port))
        start = proc_start_time(int(pid))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return host, int(port), int(pid), start, Path(run_dir), Path(data_dir)


def test_postgres_dies_with_a_killed_run(state: Path) -> None:
    host, port, pid, start, _, _ = run_and_kill(state, escape=False, forget=False)
    wait_until(lambda: gone(pid, start), 10, what="postgres to die by its parent-death signal")
    assert not listening(host, port)


def test_escaped_postgres_is_reaped_at_next_start(state: Path) -> None:
    host, port, pid, start, run_dir, _ = run_and_kill(state, escape=True, forget=False)
    assert listening(host, port), "the escaped postgres should outlive its run"
    runtime = Runtime(state)  # what the next run does first
    try:
        assert pid in [r.pid for r in runtime.reaped]
        wait_until(lambda: gone(pid, start), 10, what="the stray postgres to be reaped")
        assert not listening(host, port)
        assert not run_dir.exists()
    finally:
        runtime.close()


@pytest.mark.parametrize("ram", [False, True], ids=["disk", "ram"])
def test_unregistered_postgres_is_found_by_its_data_dir(state: Path, ram: bool) -> None:
    host, port, pid, start, _, data_dir = run_and_kill(state, escape=True, forget=True, ram=ram)
    assert data_dir.is_relative_to(shm_root(state)) == (ram and ram_available())
    runtime = Runtime(state)
    try:
        assert pid not in [r.pid for r in runtime.reaped]  # the registry never knew it
        assert listening(host, port)
        # The live run's own servers are never touched; the dead run's is.
        assert pid in reap_stray_postgres(state)
        wait_until(lambda: gone(pid, start), 10, what="the stray postgres to be reaped")
        assert not listening(host, port)
        assert not data_dir.exists()  # on disk with its run dir; in RAM removed by the reaper
    finally:
        runtime.close()


def test_live_runs_are_left_alone(new_cluster: Callable[..., PgCluster]) -> None:
    c = new_cluster()
    assert c.pid not in reap_stray_postgres(state_root())
    assert c.running()
    assert c.value("SELECT 1") == 1
