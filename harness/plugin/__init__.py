"""dbdrill's pytest plugin (entry point ``dbdrill``): options, markers and the core fixtures. Thin by
design: heavy modules (moto, boto3, psycopg) are imported only by the fixtures that need them."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from harness.config import OPTIONS, Settings, load_settings
from harness.errors import ConfigError

if TYPE_CHECKING:
    from faults.base import Timeline
    from harness.clock import Clock
    from harness.stack import Stack

# Fixture modules per area; each keeps its imports inside its fixtures.
pytest_plugins = [
    "harness.plugin.proxy",
    "harness.plugin.aws",
    "harness.plugin.dns",
    "harness.plugin.rds",
    "harness.plugin.aurora",
    "harness.plugin.drills",
    "suites.defaults",
]

_SETTINGS_KEY = pytest.StashKey[Settings]()
_STACK_KEY = pytest.StashKey["Stack"]()

MARKERS = (
    "dbdrill_drill(name): a dbdrill drill; selected by `dbdrill drill NAME`",
    "dbdrill_regions(*regions): the emulated AWS regions this test needs",
    "dbdrill_keep_state: keep emulated AWS state after this test (for the next one)",
    "slow: takes seconds, not milliseconds",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dbdrill", "dbdrill fault drills (each also an ini key and DBDRILL_* env var)")
    for opt in OPTIONS:
        group.addoption(opt.flag, dest=f"dbdrill_{opt.dest}", default=None, metavar=opt.metavar,
                        help=f"{opt.help} [ini: {opt.ini}, env: {opt.env}]")
        parser.addini(opt.ini, help=opt.help, default=None)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    cli = {o.dest: config.getoption(f"dbdrill_{o.dest}") for o in OPTIONS}
    ini = {o.dest: config.getini(o.ini) for o in OPTIONS}
    try:
        config.stash[_SETTINGS_KEY] = load_settings(cli=cli, ini=ini)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(_STACK_KEY, None)
    if stack is not None:
        stack.close()
        del config.stash[_STACK_KEY]


def get_settings(config: pytest.Config) -> Settings:
    return config.stash[_SETTINGS_KEY]


def get_stack(config: pytest.Config) -> Stack:
    """The session's stack (one per process, so one per xdist worker), made on first use."""
    stack = config.stash.get(_STACK_KEY, None)
    if stack is None:
        from harness.stack import Stack

        stack = Stack(get_settings(config))
        config.stash[_STACK_KEY] = stack
    return stack


@pytest.fixture(scope="session")
def dbdrill_settings(pytestconfig: pytest.Config) -> Settings:
    """The merged dbdrill settings (CLI > env > ini > default), frozen."""
    return get_settings(pytestconfig)


@pytest.fixture(scope="session")
def dbdrill_stack(pytestconfig: pytest.Config) -> Stack:
    """The embedded stack; services start when a fixture first needs them, stop at session end."""
    return get_stack(pytestconfig)


@pytest.fixture
def clock(dbdrill_stack: Stack) -> Iterator[Clock]:
    """The controllable clock that drives TTL, token expiry and capacity refill. Reset after the test."""
    yield dbdrill_stack.clock
    dbdrill_stack.clock.reset()


@pytest.fixture(autouse=True)
def fault_timeline() -> Iterator[Timeline]:
    """Faults started in this test are recorded here; whatever is still active afterwards is healed,
    pass or fail."""
    from faults.base import heal_all, recording

    with recording() as timeline:
        try:
            yield timeline
        finally:
            heal_all()
