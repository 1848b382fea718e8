"""One drill run inside pytest: its history, thresholds, progress line, and the evidence it leaves
(journal, HTML report, JUnit properties) whatever the outcome."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from faults.base import Fault, Timeline, recording
from suites.checkers import check_all
from suites.history import History
from suites.report import Journal, Progress, ReportFiles, record_journal, run_dir, write_report
from suites.results import CheckResult, Verdict
from suites.thresholds import Thresholds, thresholds_for

logger = logging.getLogger(__name__)


class Drill:
    """Made by the ``drill`` fixture. A drill body records operations on ``history``, runs its faults
    (they land on ``timeline``), then calls ``finish(...)``, which checks the history against the
    thresholds, writes the report and fails the test on a violated threshold."""

    def __init__(self, name: str, *, kind: str = "generic", timeline: Timeline, settings: Any = None,
                 report_dir: Path | None = None, threshold_sources: Iterable[str | Mapping[str, Any] | None] = (),
                 record_property: Callable[[str, object], None] | None = None,
                 history: History | None = None, progress_stream: Any = None, terminal: Any = None) -> None:
        self.name = name
        self.kind = kind
        self.timeline = timeline
        self.settings = settings
        self.report_dir = Path(report_dir if report_dir is not None else getattr(settings, "report_dir",
                                                                              "dbdrill-reports"))
        self._threshold_sources = list(threshold_sources)
        self._record_property = record_property
        self.history = history or History(name=name)
        self.started = time.time()
        self.extra: dict[str, Any] = {}
        self.experiment: Any = None
        self.schedule: list[dict[str, Any]] | None = None
        self.verdict: Verdict | None = None
        self.files: ReportFiles | None = None
        self._progress_stream = progress_stream
        self.out: Any = terminal if terminal is not None else sys.stdout  # the user's terminal, past capture
        self._thresholds: Thresholds | None = None

    # -- limits ----------------------------------------------------------------------------------------
    @property
    def thresholds(self) -> Thresholds:
        """This drill kind's defaults, overridden by the drill's own defaults (``defaults``), then by
        the user (ini / env / CLI ``--dbdrill-thresholds``, then the marker's ``thresholds=``)."""
        if self._thresholds is None:
            self._thresholds = thresholds_for(self.kind, *self._threshold_sources)
        return self._thresholds

    def defaults(self, **limits: Any) -> Thresholds:
        """Set the drill's own defaults (under the user's settings, which still win)."""
        self._threshold_sources.insert(0, limits)
        self._thresholds = None
        return self.thresholds

    # -- running ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def progress(self, label: str | None = None) -> Iterator[Progress]:
        """A progress line once a second on the terminal (pytest's capture is bypassed on a TTY)."""
        stream = self._progress_stream if self._progress_stream is not None else self.out
        with Progress(self.history, stream=stream, timeline=self.timeline, label=label or self.name) as p:
            yield p

    def note(self, **extra: Any) -> None:
        """Numbers and facts worth keeping in the journal (measured lag, counts, addresses...)."""
        self.extra.update(extra)

    @property
    def settle_s(self) -> float:
        """How long to wait for the workload to recover after the faults: past the RTO limit the checkers
        have their finding, so a drill never hangs on an app that does not recover."""
        return float(self.thresholds.max_rto or 60.0) + 5.0

    # -- verdict ---------------------------------------------------------------------------------------
    def check(self, *, extra_results: Iterable[CheckResult] = (), **kwargs: Any) -> Verdict:
        """``check_all`` on the history with this drill's faults and thresholds, plus the drill's own
        results (``extra_results``: checks only this drill knows how to make)."""
        kwargs.setdefault("faults", self.timeline.to_list())
        kwargs.setdefault("thresholds", self.thresholds)
        verdict = check_all(self.history, **kwargs)
        return Verdict([*verdict.results, *extra_results])

    def finish(self, verdict: Verdict | None = None, *, error: BaseException | None = None,
               assert_valid: bool = True, **check_kwargs: Any) -> Verdict | None:
        """Check (unless a verdict is given), write journal + HTML + JUnit, record JUnit properties, then
        raise AssertionError naming every violation if a threshold was violated."""
        if verdict is None and error is None:
            verdict = self.check(**check_kwargs)
        self.verdict = verdict
        journal = Journal.build(
            self.name, history=self.history, faults=self.timeline, verdict=verdict, error=error,
            thresholds=self.thresholds, settings=self.settings, started=self.started,
            experiment=self.experiment, schedule=self.schedule, extra=self.extra,
        )
        self.files = write_report(journal, run_dir(self.report_dir, self.name, self.started))
        if self._record_property is not None:
            record_journal(journal, self._record_property, report=self.files.html)
        logger.warning("drill %s: %s; report %s", self.name, journal.verdict, self.files.html)
        if assert_valid and verdict is not None:
            verdict.assert_valid()
        return verdict


class Fenced(Fault):
    """Runs ``inner`` (one timeline window under this fault's name) and, once it has taken effect, records
    a ``fence`` marker for ``node`` on the history: writes that node acknowledges after the marker are
    split brain. Recording it before the fence bites would blame writes that were still legitimate."""

    def __init__(self, inner: Fault, history: History, node: str, *, name: str | None = None) -> None:
        super().__init__(name=name or inner.name)
        self.kind = inner.kind  # type: ignore[misc]
        self.inner = inner
        self.history = history
        self.node = node

    def _inject(self) -> None:
        with recording(Timeline()):
            self.inner.start()
        self.history.event("fence", node=self.node)

    def _heal(self) -> None:
        self.inner.heal()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "fenced": self.node}

    def target_label(self) -> str:
        return self.inner.target_label()
