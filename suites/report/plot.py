"""The drill timeline plot (matplotlib, Agg, no pyplot): throughput, latency and errors over time, with
the fault windows shaded and labelled."""
from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from suites.history import History

logger = logging.getLogger(__name__)

FAULT_COLOURS = ("#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def auto_bucket(span: float) -> float:
    """About 60 buckets over ``span`` seconds, rounded to 1/2/5 steps, between 10 ms and 60 s."""
    if span <= 0:
        return 0.1
    raw = span / 60.0
    exp = math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        bucket = step * 10.0 ** exp
        if bucket >= raw:
            return float(min(60.0, max(0.01, bucket)))
    return 60.0


def _fault_spans(faults: Sequence[Mapping[str, Any]], t0: float,
                 end: float) -> list[tuple[float, float, str, bool]]:
    """(start, end, label, is_pause) per window, seconds from t0; an open window runs to ``end``."""
    spans = []
    for f in faults:
        start = f.get("start_mono")
        if start is None:
            continue
        stop = f.get("end_mono")
        label = str(f.get("name") or f.get("kind") or "fault")
        if f.get("target"):
            label += f" ({f['target']})"
        spans.append((float(start) - t0, (float(stop) if stop is not None else end + t0) - t0, label,
                      f.get("kind") == "wait"))
    return spans


def timeline_figure(history: History, faults: Sequence[Mapping[str, Any]] = (), *, bucket: float | None = None,
                    title: str = "") -> Any:
    """A matplotlib Figure with three panes sharing the time axis (seconds from the first op)."""
    from matplotlib.figure import Figure

    ops = history.operations()
    t0 = history.t0
    ends = [op.complete_time or op.invoke_time for op in ops]
    ends += [float(f["end_mono"]) for f in faults if f.get("end_mono") is not None]
    span = max([e - t0 for e in ends], default=1.0)
    bucket = bucket or auto_bucket(span)
    series = history.series(bucket, start=0.0, end=span + bucket)
    fig = Figure(figsize=(11, 6.5), dpi=100, layout="constrained")
    ax_tp, ax_lat, ax_err = fig.subplots(3, 1, sharex=True, height_ratios=(3, 3, 2))
    mids = [t + bucket / 2 for t in series.t]
    ax_tp.step(series.t, series.throughput, where="post", color="#1f77b4", label="ok ops/s")
    ax_tp.set_ylabel("throughput\n(ok ops/s)")
    p50 = [math.nan if v is None else v * 1000 for v in series.p50]
    p99 = [math.nan if v is None else v * 1000 for v in series.p99]
    ax_lat.plot(mids, p50, marker=".", color="#2ca02c", label="p50")
    ax_lat.plot(mids, p99, marker=".", color="#ff7f0e", label="p99")
    ax_lat.set_ylabel("latency (ms)")
    if any(not math.isnan(v) and v > 0 for v in p99):
        from matplotlib.ticker import FuncFormatter, LogLocator

        # Log scale: a timeout of seconds and a 0.3 ms round trip must both be readable.
        ax_lat.set_yscale("log")
        ax_lat.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_lat.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax_lat.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax_lat.legend(loc="upper right", fontsize=8)
    ax_err.bar(series.t, series.fail, width=bucket, align="edge", color="#d62728", label="fail")
    ax_err.bar(series.t, series.info, width=bucket, align="edge", bottom=series.fail, color="#bcbd22",
               label="info (unknown)")
    ax_err.set_ylabel(f"errors\n(per {bucket:g}s)")
    ax_err.legend(loc="upper right", fontsize=8)
    ax_err.set_xlabel("seconds since the drill started")
    for i, (start, stop, label, pause) in enumerate(_fault_spans(faults, t0, span)):
        colour = "#7f7f7f" if pause else FAULT_COLOURS[i % len(FAULT_COLOURS)]
        for ax in (ax_tp, ax_lat, ax_err):
            if stop - start < bucket / 10:
                ax.axvline(start, color=colour, linestyle="--", linewidth=1.2)
            elif pause:  # a planned wait (aws:fis:wait), not a fault: outline only
                ax.axvspan(start, stop, facecolor="none", edgecolor=colour, hatch="//", alpha=0.3, linewidth=0)
            else:
                ax.axvspan(start, stop, color=colour, alpha=0.15, linewidth=0)
        ax_tp.annotate(label, xy=(start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2 - 11 * (i % 3)),
                       textcoords="offset points", va="top", fontsize=8, color=colour)
    if not ops:
        ax_tp.text(0.5, 0.5, "no operations recorded", transform=ax_tp.transAxes, ha="center", va="center")
    for ax in (ax_tp, ax_lat, ax_err):
        ax.grid(True, alpha=0.3)
    ax_err.set_xlim(0, max(span, bucket) * 1.02)
    if title:
        fig.suptitle(title)
    return fig


def render(fig: Any, fmt: str = "png") -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()


def timeline_png(history: History, faults: Sequence[Mapping[str, Any]] = (), *, bucket: float | None = None,
                 title: str = "") -> bytes:
    """The timeline plot as PNG bytes."""
    return render(timeline_figure(history, faults, bucket=bucket, title=title), "png")
