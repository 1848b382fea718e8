"""Drill reports: the JSON journal, JUnit XML, a self-contained HTML report with the timeline plot."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from suites.report.html import rebuild_html, render_html, write_html
from suites.report.journal import ERROR, FAIL, PASS, Journal, environment, run_dir
from suites.report.junit import journal_properties, record_journal, write_junit
from suites.report.progress import Progress

__all__ = ["ERROR", "FAIL", "PASS", "Journal", "Progress", "ReportFiles", "environment", "journal_properties",
           "rebuild_html", "record_journal", "render_html", "run_dir", "write_html", "write_junit", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    journal: Path
    html: Path
    junit: Path


def write_report(journal: Journal, directory: str | Path) -> ReportFiles:
    """``journal.json``, ``report.html`` and ``junit.xml`` in ``directory`` (``run_dir`` makes a fresh one)."""
    d = Path(directory)
    return ReportFiles(d, journal.write(d / "journal.json"), write_html(journal, d / "report.html"),
                       write_junit([journal], d / "junit.xml"))
