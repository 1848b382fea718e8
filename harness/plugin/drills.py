"""dbdrill pytest fixtures: drills (history, thresholds, reports)."""
from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from faults.base import Timeline
    from harness.config import Settings
    from suites.drill import Drill

_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


class _Terminal:
    """A text stream that reaches the user's terminal past pytest's output capture (a game day's plan and
    progress must be seen while the drill runs, not after)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def write(self, text: str) -> int:
        import sys

        capman = self.config.pluginmanager.getplugin("capturemanager")
        if capman is None:
            return sys.stdout.write(text)
        with capman.global_and_fixture_disabled():
            sys.stdout.write(text)
            sys.stdout.flush()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        # sys.stdout is pytest's capture here; the terminal writer knows whether the real one is a terminal.
        return bool(self.config.get_terminal_writer().hasmarkup)


@pytest.fixture
def drill(request: pytest.FixtureRequest, dbdrill_settings: Settings, fault_timeline: Timeline,
          record_property: Any) -> Iterator[Drill]:
    """A drill run: ``drill.history`` to record operations, ``drill.thresholds`` (kind from the
    ``dbdrill_drill(name, kind=..., thresholds=...)`` marker, overridden by ``--dbdrill-thresholds``),
    ``drill.finish()`` to check and report. A drill that raises still leaves a journal (verdict error)."""
    from suites.drill import Drill

    marker = request.node.get_closest_marker("dbdrill_drill")
    name = (marker.args[0] if marker and marker.args else None) or request.node.name
    kind = marker.kwargs.get("kind", "generic") if marker else "generic"
    sources: list[Any] = [dbdrill_settings.thresholds]
    if marker and marker.kwargs.get("thresholds"):
        sources.insert(0, marker.kwargs["thresholds"])
    run = Drill(name, kind=kind, timeline=fault_timeline, settings=dbdrill_settings,
                report_dir=dbdrill_settings.report_dir, threshold_sources=sources,
                record_property=record_property, terminal=_Terminal(request.config))
    yield run
    report = request.node.stash.get(_CALL_REPORT, None)
    if run.files is None and report is not None and report.failed:
        run.finish(error=RuntimeError(str(report.longrepr)[-2000:]), assert_valid=False)
