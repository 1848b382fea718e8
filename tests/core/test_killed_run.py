"""A pytest run holding services is SIGKILLed: nothing stays listening (parent-death signal), and what
escaped is reaped by the next run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.runtime import Runtime
from harness.state import reap_strays
from harness.wait import WaitTimeout
from harness.wait import wait_until as harness_wait

INNER = '''
import os, signal, socket, sys
from pathlib import Path
from harness.process import Executor
from harness.runtime import get_runtime

LISTENER = "import socket,sys,signal; s=socket.socket(); s.bind((sys.argv[1], 0)); s.listen();" \\
    "open(sys.argv[2], 'w').write(str(s.getsockname()[1])); signal.pause()"

def test_hold_services():
    rt = get_runtime()
    host = rt.hosts.allocate("svc")
    portfile = Path(os.environ["OUT"] + ".port")
    ex = Executor("svc", [sys.executable, "-c", LISTENER, host, str(portfile)],
                  ready=lambda: portfile.exists() and portfile.read_text() != "",
                  log_path=rt.run.path / "svc.log", pdeathsig=int(os.environ["PDEATHSIG"]))
    ex.start()
    Path(os.environ["OUT"]).write_text(f"{host} {portfile.read_text()} {ex.pid} {rt.run.path}")
    signal.pause()  # held until the outer test kills this run
'''


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_until(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    try:
        return harness_wait(pred, timeout, what="condition")
    except WaitTimeout:
        return False


def run_and_kill(tmp_path: Path, pdeathsig: int) -> tuple[str, int, int, Path]:
    test_file = tmp_path / "test_inner_hold.py"
    test_file.write_text(INNER)
    out = tmp_path / "out.txt"
    env = dict(os.environ, OUT=str(out), PDEATHSIG=str(pdeathsig), DBDRILL_STATE_DIR=str(tmp_path / "state"))
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: out.exists() and out.read_text() != ""), "inner run never started its service"
        host, port, pid, run_dir = out.read_text().split()
        assert listening(host, int(port))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return host, int(port), int(pid), Path(run_dir)


def test_sigkilled_run_leaves_nothing_listening(tmp_path: Path) -> None:
    host, port, _, _ = run_and_kill(tmp_path, pdeathsig=signal.SIGKILL)
    assert wait_until(lambda: not listening(host, port), timeout=10), f"{host}:{port} still listening"


def test_next_run_reaps_what_escaped(tmp_path: Path) -> None:
    # pdeathsig 0: the child does not die with the run (as a grandchild or a detached daemon would not).
    host, port, pid, run_dir = run_and_kill(tmp_path, pdeathsig=0)
    assert listening(host, port), "the escaped service should still be up before the reaper runs"
    assert run_dir.exists()
    runtime = Runtime(tmp_path / "state")  # what the next run does first
    try:
        assert [r.pid for r in runtime.reaped] == [pid]
        assert wait_until(lambda: not listening(host, port), timeout=10)
        assert not run_dir.exists()
    finally:
        runtime.close()


def test_reaper_skips_live_runs(tmp_path: Path) -> None:
    live = Runtime(tmp_path / "state")
    try:
        assert reap_strays(tmp_path / "state") == []
        assert live.run.path.exists()
    finally:
        live.close()
    assert not live.run.path.exists()


@pytest.mark.parametrize("junk", ["no-lock-dir"])
def test_reaper_tolerates_junk(tmp_path: Path, junk: str) -> None:
    (tmp_path / "state" / "runs" / junk).mkdir(parents=True)
    assert reap_strays(tmp_path / "state") == []
