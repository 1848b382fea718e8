"""JUnit XML for CI: drill journals as ``record_property`` pairs, and a standalone JUnit XML writer."""
from __future__ import annotations

import logging
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from suites.report.journal import ERROR, FAIL, Journal

logger = logging.getLogger(__name__)

PREFIX = "dbdrill"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def journal_properties(journal: Journal, *, report: str | Path | None = None) -> list[tuple[str, str]]:
    """Flat (name, value) pairs for pytest's ``record_property`` / JUnit ``<property>``: the verdict,
    each check's outcome and scalar numbers, thresholds, fault count, FIS experiment state."""
    props: list[tuple[str, str]] = [
        (f"{PREFIX}.drill", journal.drill), (f"{PREFIX}.verdict", journal.verdict),
        (f"{PREFIX}.target", journal.target),
        (f"{PREFIX}.duration_s", _text(journal.timings.get("duration_s"))),
        (f"{PREFIX}.ops", str(sum(1 for e in journal.history if e.get("type") == "invoke"
                                  and e.get("process") != "nemesis"))),
        (f"{PREFIX}.faults", str(len(journal.faults))),
    ]
    for result in journal.results:
        name = result["name"]
        outcome = "skipped" if result.get("skipped") else ("pass" if result["valid"] else "fail")
        props.append((f"{PREFIX}.check.{name}", outcome))
        for key, value in (result.get("numbers") or {}).items():
            if value is None or isinstance(value, int | float | str | bool):
                props.append((f"{PREFIX}.check.{name}.{key}", _text(value)))
    for key, value in journal.thresholds.items():
        props.append((f"{PREFIX}.threshold.{key}", _text(value)))
    if journal.experiment:
        props.append((f"{PREFIX}.experiment.state", _text(journal.experiment.get("state"))))
        props.append((f"{PREFIX}.experiment.reason", _text(journal.experiment.get("reason"))))
    if report is not None:
        props.append((f"{PREFIX}.report", str(report)))
    return props


def record_journal(journal: Journal, record_property: Callable[[str, object], None], *,
                   report: str | Path | None = None) -> None:
    """``record_journal(journal, record_property)`` inside a test puts the drill's numbers in JUnit."""
    for name, value in journal_properties(journal, report=report):
        record_property(name, value)


def junit_tree(journals: Iterable[Journal], *, suite: str = "dbdrill") -> ET.ElementTree:
    journals = list(journals)
    failures = sum(j.verdict == FAIL for j in journals)
    errors = sum(j.verdict == ERROR for j in journals)
    total = sum(float(j.timings.get("duration_s") or 0.0) for j in journals)
    started = min((float(j.timings.get("started") or time.time()) for j in journals), default=time.time())
    root = ET.Element("testsuites", name=suite, tests=str(len(journals)), failures=str(failures),
                      errors=str(errors), time=f"{total:.3f}")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(journals)), failures=str(failures),
                       errors=str(errors), skipped="0", time=f"{total:.3f}",
                       timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
                       hostname=socket.gethostname())
    for j in journals:
        case = ET.SubElement(ts, "testcase", classname=f"{suite}.drills", name=j.drill,
                             time=f"{float(j.timings.get('duration_s') or 0.0):.3f}")
        props = ET.SubElement(case, "properties")
        for name, value in journal_properties(j):
            ET.SubElement(props, "property", name=name, value=value)
        first_line = (j.message or j.verdict).splitlines()[0] if (j.message or j.verdict) else j.verdict
        if j.verdict == FAIL:
            ET.SubElement(case, "failure", message=first_line, type="DrillFailed").text = j.message
        elif j.verdict == ERROR:
            ET.SubElement(case, "error", message=first_line, type="DrillError").text = j.message
        ET.SubElement(case, "system-out").text = _summary(j)
    ET.indent(root)
    return ET.ElementTree(root)


def _summary(j: Journal) -> str:
    lines = [f"drill {j.drill} on {j.target}: {j.verdict}"]
    for r in j.results:
        lines.append(f"  {r['name']}: {r['summary']}")
    for f in j.faults:
        lines.append(f"  fault {f.get('name')} ({f.get('kind')}) on {f.get('target') or '-'}: "
                     f"{_text(f.get('duration'))}s")
    return "\n".join(lines)


def write_junit(journals: Iterable[Journal], path: str | Path, *, suite: str = "dbdrill") -> Path:
    """One ``<testcase>`` per drill journal (failure for fail, error for error), properties included."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(journals, suite=suite).write(p, encoding="utf-8", xml_declaration=True)
    return p
