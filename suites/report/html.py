"""A self-contained HTML drill report (inline CSS, the timeline plot as an inline base64 PNG)."""
from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from suites.report.journal import Journal
from suites.report.plot import timeline_png

logger = logging.getLogger(__name__)

SHOWN_VIOLATIONS = 50
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;text-transform:uppercase}
.pass{background:#2e7d32}.fail{background:#c62828}.error{background:#6a1b9a}.skipped{background:#777}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;white-space:pre-wrap}img.plot{width:100%;border:1px solid #ddd}
.meta{color:#555}code{background:#f4f4f4;padding:0 3px}details{margin:.5em 0}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e6 else f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, _Raw):
                cells.append(f"<td>{cell.html}</td>")
            else:
                num = isinstance(cell, int | float) and not isinstance(cell, bool)
                cells.append(f"<td{' class=num' if num else ''}>{escape(_fmt(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        body.append(f"<tr><td colspan={len(headers)}><em>none</em></td></tr>")
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw:
    def __init__(self, html: str) -> None:
        self.html = html


def _badge(outcome: str) -> _Raw:
    return _Raw(f"<span class='badge {escape(outcome)}'>{escape(outcome)}</span>")


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d} UTC"


def _faults_table(journal: Journal, t0: float) -> str:
    rows = []
    for f in journal.faults:
        start = f.get("start_mono")
        rows.append([f.get("name"), f.get("kind"), f.get("target") or "-",
                     None if start is None else round(float(start) - t0, 3), f.get("duration"),
                     _when(f.get("start")), f.get("params") or {}, f.get("error") or ""])
    return _table(["fault", "kind", "target", "start (s)", "duration (s)", "started at", "parameters", "error"],
                  rows, cls="faults")


def _checks_table(journal: Journal) -> str:
    rows = []
    for r in journal.results:
        outcome = "skipped" if r.get("skipped") else ("pass" if r["valid"] else "fail")
        scalars = {k: v for k, v in (r.get("numbers") or {}).items() if not isinstance(v, list | dict)}
        rows.append([r["name"], _badge(outcome), r["summary"], _Raw(
            "<br>".join(f"{escape(k)}: <b>{escape(_fmt(v))}</b>" for k, v in scalars.items()))])
    out = _table(["check", "result", "summary", "numbers"], rows, cls="checks")
    for r in journal.results:
        windows = (r.get("numbers") or {}).get("windows")
        if windows:
            keys = list(windows[0])
            out += f"<details open><summary>{escape(r['name'])} per fault window</summary>"
            out += _table(keys, ([w.get(k) for k in keys] for w in windows)) + "</details>"
        if r.get("violations"):
            items = r["violations"][:SHOWN_VIOLATIONS]
            more = len(r["violations"]) - len(items)
            lis = "".join(f"<li><b>{escape(v['what'])}</b>: {escape(v['detail'])}"
                          + (f" <code>{escape(_op(v['op']))}</code>" if v.get("op") else "") + "</li>" for v in items)
            tail = f"<li>... and {more} more</li>" if more > 0 else ""
            out += f"<details open><summary>{escape(r['name'])} violations</summary><ul>{lis}{tail}</ul></details>"
    return out


def _op(op: Mapping[str, Any]) -> str:
    via = op.get("endpoint") or ""
    if op.get("node") and op.get("node") != via:
        via = f"{via} ({op['node']})" if via else str(op["node"])
    return (f"#{op.get('id')} {op.get('f')} {json.dumps(op.get('value'), default=str)[:80]} by process "
            f"{op.get('process')} [{op.get('type')}] at t={_fmt(op.get('t'))}s" + (f" via {via}" if via else ""))


def _experiment(journal: Journal, t0: float) -> str:
    exp = journal.experiment
    if not exp:
        return ""
    rows = []
    for a in (exp.get("actions") or {}).values():
        start = a.get("start_mono")
        dur = None if start is None or a.get("end_mono") is None else a["end_mono"] - start
        rows.append([a.get("name"), a.get("action_id"), a.get("state"), ", ".join(a.get("start_after") or []) or "-",
                     a.get("duration"), a.get("scaled_duration"), None if start is None else round(start - t0, 3),
                     dur, a.get("error") or ""])
    head = (f"<p>Experiment <code>{escape(str(exp.get('id')))}</code>: <b>{escape(str(exp.get('state')))}</b> "
            f"({escape(str(exp.get('reason')))}); time scale {escape(_fmt(exp.get('time_scale')))}</p>")
    return "<h2>FIS experiment</h2>" + head + _table(
        ["action", "actionId", "state", "startAfter", "duration (s)", "scaled (s)", "start (s)", "ran (s)", "error"],
        rows)


def render_html(journal: Journal, *, bucket: float | None = None) -> str:
    """The whole report as one HTML string with no external assets."""
    history = journal.history_obj()
    t0 = history.t0
    counts = history.counts()
    try:
        png = timeline_png(history, journal.faults, bucket=bucket, title=journal.drill)
        plot = (f"<img class='plot' alt='throughput, latency and errors over time with fault windows' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>")
    except Exception as exc:
        logger.exception("plotting %s failed", journal.drill)
        plot = f"<p><em>plot unavailable: {escape(str(exc))}</em></p>"
    timings = journal.timings
    thresholds = [[k, v] for k, v in journal.thresholds.items()]
    schedule = ""
    if journal.schedule:
        keys = list(journal.schedule[0])
        schedule = "<h2>Fault schedule</h2>" + _table(keys, ([s.get(k) for k in keys] for s in journal.schedule))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dbdrill: {escape(journal.drill)} ({escape(journal.verdict)})</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(journal.drill)} {_badge(journal.verdict).html}</h1>",
        f"<p class='meta'>target <b>{escape(journal.target)}</b> &middot; started {_when(timings.get('started'))} "
        f"&middot; {escape(_fmt(timings.get('duration_s')))} s &middot; {counts['total']} operations "
        f"({counts['ok']} ok, {counts['fail']} fail, {counts['info'] + counts['pending']} unknown) &middot; "
        f"{len(journal.faults)} fault window(s)</p>",
        f"<h2>Verdict</h2><pre>{escape(journal.message or journal.verdict)}</pre>",
        "<h2>Timeline</h2>", plot,
        "<h2>Faults</h2>", _faults_table(journal, t0),
        "<h2>Checks</h2>", _checks_table(journal),
        "<h2>Thresholds</h2>", _table(["threshold", "value"], thresholds, cls="thresholds"),
        _experiment(journal, t0), schedule,
        "<h2>Run</h2><details><summary>settings</summary>", _table(["setting", "value"], journal.settings.items()),
        "</details><details><summary>environment</summary>",
        _table(["item", "value"], journal.environment.items()), "</details>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(journal: Journal, path: str | Path, *, bucket: float | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(journal, bucket=bucket), encoding="utf-8")
    return p


def rebuild_html(journal_path: str | Path, out: str | Path | None = None, *, bucket: float | None = None) -> Path:
    """Re-render the HTML report of a saved journal (``dbdrill report PATH``); next to it by default."""
    jp = Path(journal_path)
    if jp.is_dir():
        jp = jp / "journal.json"
    journal = Journal.load(jp)
    return write_html(journal, out if out is not None else jp.with_name("report.html"), bucket=bucket)
