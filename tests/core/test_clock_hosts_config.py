"""Clock, loopback host allocation and settings parsing."""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.clock import Clock
from harness.config import OPTIONS, Settings, load_settings
from harness.errors import ConfigError
from harness.hosts import HostAllocator, is_loopback


def test_clock_follows_real_time_and_advances() -> None:
    c = Clock()
    t0, real0 = c.time(), time.time()
    assert abs(t0 - real0) < 0.05
    seen: list[float] = []
    unsub = c.subscribe(seen.append)
    now = c.advance(3600)
    assert now - time.time() == pytest.approx(3600, abs=0.05)
    assert seen == [now]
    unsub()
    c.advance(1)
    assert len(seen) == 1
    c.reset()
    assert abs(c.time() - time.time()) < 0.05


def test_frozen_clock_moves_only_on_advance() -> None:
    c = Clock(frozen=True)
    t0, m0 = c.time(), c.monotonic()
    assert c.time() == t0
    c.advance(2.5)
    assert c.time() == t0 + 2.5 and c.monotonic() == m0 + 2.5
    c.unfreeze()
    assert not c.frozen
    assert c.time() >= t0 + 2.5


def test_clock_never_goes_back() -> None:
    with pytest.raises(ValueError, match="time never goes back"):
        Clock().advance(-1)


def test_clock_start() -> None:
    c = Clock(start=1_000_000.0, frozen=True)
    assert c.time() == pytest.approx(1_000_000.0, abs=0.01)


def test_hosts_are_distinct_loopback_and_bindable(tmp_path: Path) -> None:
    alloc = HostAllocator(tmp_path)
    try:
        addrs = {alloc.allocate() for _ in range(300)}
        assert len(addrs) == 300
        assert all(ipaddress.ip_address(a).is_loopback for a in addrs)
        assert alloc.allocate("db1") == alloc.allocate("db1") == alloc.lookup("db1")
        with socket.socket() as s:
            s.bind((alloc.allocate("svc"), 0))
    finally:
        alloc.close()


def test_two_allocators_take_different_blocks(tmp_path: Path) -> None:
    """Parallel runs (and xdist workers) hold different /16 blocks."""
    code = ("import sys, time; from pathlib import Path; from harness.hosts import HostAllocator;"
            "a = HostAllocator(Path(sys.argv[1])); print(a.block, flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                             stdin=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        their_block = int(other.stdout.readline())
        mine = HostAllocator(tmp_path)
        assert mine.block != their_block
        mine.close()
    finally:
        other.communicate("", timeout=10)


def test_is_loopback() -> None:
    assert is_loopback("127.20.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("dynamodb.us-east-1.amazonaws.com")


def test_settings_defaults_and_precedence() -> None:
    s = load_settings(env={})
    assert s == Settings()
    s = load_settings(cli={"regions": "us-east-1,eu-west-1"}, env={"DBDRILL_REGIONS": "ap-south-1"},
                      ini={"regions": "sa-east-1"})
    assert s.regions == ("us-east-1", "eu-west-1")
    s = load_settings(env={"DBDRILL_REGIONS": "ap-south-1"}, ini={"regions": "sa-east-1"})
    assert s.regions == ("ap-south-1",)
    s = load_settings(ini={"keep_state": "true", "ttl_delay": "2.5"}, env={})
    assert s.keep_state is True and s.ttl_delay == 2.5
    # A falsy value given on the command line wins over a truthy ini value.
    s = load_settings(cli={"keep_state": "false"}, ini={"keep_state": "true"}, env={})
    assert s.keep_state is False


@pytest.mark.parametrize(
    ("dest", "raw", "message"),
    [
        ("keep_state", "maybe", "--dbdrill-keep-state: expected true/false"),
        ("time_profile", "slow", "expected one of fast, aws"),
        ("toxiproxy_url", "ftp://x", "expected http://HOST:PORT"),
        ("ttl_delay", "-1", "must be >= 0"),
    ],
)
def test_bad_settings_say_what_and_how(dest: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(cli={dest: raw}, env={})


def test_target_aws_needs_allow_list() -> None:
    with pytest.raises(ConfigError, match="allow-list"):
        load_settings(cli={"target": "aws"}, env={})
    s = load_settings(cli={"target": "aws", "aws_allow_accounts": "111122223333"}, env={})
    assert s.aws_allow_accounts == ("111122223333",)


def test_every_option_has_a_settings_field() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert {o.dest for o in OPTIONS} <= fields
    assert all(o.env.startswith("DBDRILL_") and o.flag.startswith("--dbdrill-") for o in OPTIONS)
    assert os.environ.get("DBDRILL_TARGET") in (None, "emulator")
