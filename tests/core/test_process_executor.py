"""Executor: readiness with a deadline, fail fast, log tail, stop, process group, parent death."""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest

from harness.errors import ServiceError
from harness.process import Executor
from harness.state import proc_start_time
from harness.wait import wait_until

LISTENER = """
import socket, sys, os, time
host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
time.sleep(delay)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen()
print("listening", host, port, flush=True)
while True:
    c, _ = s.accept(); c.close()
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def can_connect(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def listener(tmp_path: Path, *, delay: float = 0.0, timeout: float = 5.0, name: str = "listener") -> Executor:
    port = free_port()
    return Executor(
        name, [sys.executable, "-c", LISTENER, "127.0.0.1", str(port), str(delay)],
        ready=lambda: can_connect("127.0.0.1", port), log_path=tmp_path / f"{name}.log", timeout=timeout,
    )


def test_start_waits_for_readiness_and_stop_frees_the_port(tmp_path: Path) -> None:
    ex = listener(tmp_path, delay=0.3)
    with ex:
        assert ex.running()
        port = int(ex.argv[4])
        assert can_connect("127.0.0.1", port)
    assert not ex.running()
    assert not can_connect("127.0.0.1", port)


def test_child_dying_during_start_fails_fast_with_log_tail(tmp_path: Path) -> None:
    ex = Executor(
        "crasher", [sys.executable, "-c", "import sys; print('boom: bad config line 3'); sys.exit(3)"],
        ready=lambda: False, log_path=tmp_path / "crasher.log", timeout=30,
    )
    with pytest.raises(ServiceError, match="exited with code 3") as info:
        ex.start()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "boom: bad config line 3" in notes
    # Failing fast: well under the 30 s readiness deadline (generous bound for a loaded machine).
    assert info.value.obj is ex


def test_not_ready_before_deadline_stops_the_child(tmp_path: Path) -> None:
    ex = listener(tmp_path, delay=60, timeout=0.5, name="slow")
    with pytest.raises(ServiceError, match=r"not ready after 0\.5s"):
        ex.start()
    assert not ex.running()


def test_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    ex = Executor("ghost", ["/nonexistent/bin/ghostd"], ready=lambda: True, log_path=tmp_path / "g.log")
    with pytest.raises(ServiceError, match="cannot run /nonexistent/bin/ghostd"):
        ex.start()


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    log = tmp_path / "parent.log"
    ex = Executor("parent", [sys.executable, "-c", script], ready=lambda: log.read_text().strip() != "",
                  log_path=log)
    ex.start()
    grandchild = int(log.read_text().split()[0])
    assert proc_start_time(grandchild) is not None
    ex.stop()
    # The grandchild was in the group: it is gone (or a zombie waiting for init). SIGKILL is delivered
    # asynchronously, so allow the kernel a moment.
    stat = Path(f"/proc/{grandchild}/stat")

    def gone() -> bool:
        try:
            return stat.read_text().split(") ")[1].startswith("Z")
        except (FileNotFoundError, ProcessLookupError):
            return True

    wait_until(gone, 5, what=f"grandchild {grandchild} to die")


def test_stop_escalates_to_sigkill_when_the_child_ignores_sigterm(tmp_path: Path) -> None:
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('up', flush=True)\ntime.sleep(600)")
    log = tmp_path / "stubborn.log"
    ex = Executor("stubborn", [sys.executable, "-c", script], ready=lambda: "up" in log.read_text(),
                  log_path=log, stop_timeout=0.3)
    ex.start()
    ex.stop()
    assert ex.proc is not None and ex.proc.returncode == -signal.SIGKILL


def test_children_started_from_a_short_lived_thread_outlive_it(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* exits; the spawner thread prevents that."""
    ex = listener(tmp_path, name="threaded")
    t = threading.Thread(target=ex.start)
    t.start()
    t.join(10)
    assert ex.running()
    port = int(ex.argv[4])
    assert can_connect("127.0.0.1", port)
    ex.stop()


def test_log_tail_of_missing_log(tmp_path: Path) -> None:
    ex = Executor("x", ["true"], ready=lambda: True, log_path=tmp_path / "none.log")
    assert "no log" in ex.log_tail()


def test_pid_and_repr(tmp_path: Path) -> None:
    ex = listener(tmp_path, name="named")
    assert ex.pid is None
    with ex:
        assert ex.pid and os.getpgid(ex.pid) == ex.pid
        assert "named" in repr(ex)
