"""Checkers over a drill history: lost writes, stale reads, split brain, RTO, RPO, availability."""
from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from suites.history import FAIL, INFO, OK, PENDING, History, Operation, jsonable, percentile
from suites.results import CheckResult, Fence, Verdict, Violation, Window, windows

__all__ = ["CHECKS", "CheckResult", "Fence", "Verdict", "Violation", "Window", "availability", "check_all",
           "data_loss", "lost_writes", "read_values", "recovery", "split_brain", "stale_reads", "windows"]

logger = logging.getLogger(__name__)

CHECKS = ("lost-writes", "stale-reads", "split-brain", "recovery", "data-loss", "availability")


def _key(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(jsonable(value), sort_keys=True)


def read_values(value: Any) -> set[Any] | frozenset[Any]:
    """The values a read saw: a collection's elements, a dict's keys, a scalar itself, None nothing."""
    if value is None:
        return set()
    if isinstance(value, set | frozenset | Mapping):
        return value if isinstance(value, set | frozenset) else set(value)
    if isinstance(value, list | tuple):
        try:
            return set(value)
        except TypeError:
            return {_key(v) for v in value}
    return {_key(value)}


def _fs(f: str | Iterable[str]) -> set[str]:
    return {f} if isinstance(f, str) else set(f)


def _written(op: Operation) -> Any:
    return _key(op.invoke_value if op.invoke_value is not None else op.value)


def _skip(name: str, reason: str) -> CheckResult:
    return CheckResult(name, True, f"skipped: {reason}", skipped=reason)


# -- lost writes ------------------------------------------------------------------------------------
@dataclass
class _Loss:
    final: list[Operation]
    lost: list[Operation]
    violations: list[Violation]
    numbers: dict[str, Any]


def _final_reads(history: History, final_read: str, read: str | Iterable[str]) -> list[Operation]:
    finals = [op for op in history.operations(final_read) if op.ok]
    if finals:
        return finals
    reads = [op for op in history.operations(read) if op.ok and op.complete_time is not None]
    return [max(reads, key=lambda op: op.complete_time or 0.0)] if reads else []


def _loss(history: History, write: str | Iterable[str], final_read: str, read: str | Iterable[str]) -> _Loss:
    finals = _final_reads(history, final_read, read)
    seen: set[Any] = set()
    for op in finals:
        seen |= read_values(op.value)
    last_start = max((op.invoke_time for op in finals), default=float("-inf"))
    writes = history.operations(_fs(write))
    attempted = {_written(op) for op in writes}
    lost, violations = [], []
    recovered = info_absent = after_final = acked = 0
    for op in writes:
        present = _written(op) in seen
        if op.type == OK:
            if op.complete_time is not None and op.complete_time > last_start:
                after_final += 1
                continue
            acked += 1
            if not present:
                lost.append(op)
                violations.append(Violation("lost write", f"acknowledged write {op.invoke_value!r} is missing "
                                            "from the final read", op))
        elif op.type == FAIL and present:
            violations.append(Violation("failed write present", f"write {op.invoke_value!r} was reported failed "
                                        "(definitely not done) but is in the final read", op))
        elif op.type in (INFO, PENDING):
            if present:
                recovered += 1
            else:
                info_absent += 1
    unexpected = sorted((v for v in seen if v not in attempted), key=repr)
    for v in unexpected:
        violations.append(Violation("unexpected value", f"{v!r} is in the final read but was never written"))
    numbers = {"final_reads": len(finals), "acknowledged": acked, "lost": len(lost), "recovered_info": recovered,
               "info_absent": info_absent, "unexpected": len(unexpected), "acked_after_final_read": after_final,
               "failed_present": sum(v.what == "failed write present" for v in violations)}
    return _Loss(finals, lost, violations, numbers)


def lost_writes(history: History, *, write: str | Iterable[str] = "write", final_read: str = "final-read",
                read: str | Iterable[str] = "read", max_lost: int = 0) -> CheckResult:
    """Acknowledged (ok) writes must be in the final read(s) (ops with f=``final_read``; else the last ok
    read). Info writes may or may not be; failed writes and never-written values must not be."""
    name = "lost-writes"
    loss = _loss(history, write, final_read, read)
    if not loss.final:
        return CheckResult(name, False, f"no successful final read: record one with f={final_read!r} after the "
                           "faults heal", numbers=loss.numbers)
    n = loss.numbers
    others = [v for v in loss.violations if v.what != "lost write"]
    valid = len(loss.lost) <= max_lost and not others
    summary = (f"{n['lost']} of {n['acknowledged']} acknowledged writes lost (allowed {max_lost}), "
               f"{n['failed_present']} failed writes present, {n['unexpected']} unexpected values, "
               f"{n['recovered_info']} indeterminate writes present, {n['info_absent']} absent")
    return CheckResult(name, valid, summary, loss.violations if not valid else [], n)


# -- stale reads ------------------------------------------------------------------------------------
WriterSpec = Collection[str] | Callable[[Operation], bool] | None


def _is_writer(spec: WriterSpec) -> Callable[[Operation], bool]:
    if spec is None:
        return lambda op: op.extra.get("role", "writer") == "writer"
    if callable(spec):
        return spec
    names = set(spec)
    return lambda op: op.endpoint in names or op.node in names or op.extra.get("role") == "writer"


def stale_reads(history: History, *, writer: WriterSpec = None, write: str | Iterable[str] = "write",
                read: str | Iterable[str] = "read", model: str = "set", max_writer_stale: int = 0,
                max_reader_lag: float | None = None, max_reader_lag_ops: int | None = None) -> CheckResult:
    """A read must reflect every write acknowledged before the read was invoked.

    ``writer``: endpoints / nodes (or a predicate) whose reads must never be stale; other reads are
    replica reads, measured as lag. Without it, reads tagged ``role="reader"`` are replica reads and all
    others writer reads. ``model="set"``: a read returns every value present; ``"latest"``: it returns
    the newest value and written values increase. Lag in seconds is read invoke time minus the ack time
    of the oldest write it missed (a lower bound: the write committed no later than its ack)."""
    name = "stale-reads"
    if model not in ("set", "latest"):
        raise ValueError(f"model must be 'set' or 'latest', got {model!r}")
    is_writer = _is_writer(writer)
    acked = sorted((op for op in history.operations(_fs(write)) if op.ok and op.complete_time is not None),
                   key=lambda op: op.complete_time or 0.0)
    times = [op.complete_time or 0.0 for op in acked]
    prefix = _Prefix(acked, model)
    reads = sorted((op for op in history.operations(_fs(read)) if op.ok), key=lambda op: op.invoke_time)
    if not reads:
        return _skip(name, "no successful reads")
    violations: list[Violation] = []
    lag_ops: list[float] = []
    lag_s: list[float] = []
    writer_reads = writer_stale = reader_stale = 0
    for rd in reads:
        n = bisect.bisect_left(times, rd.invoke_time)
        missed = prefix.missed(n, rd.value)
        lag = (rd.invoke_time - (missed[0].complete_time or 0.0)) if missed else 0.0
        if is_writer(rd):
            writer_reads += 1
            if missed:
                writer_stale += 1
                shown = ", ".join(repr(op.invoke_value) for op in missed[:5])
                more = f" and {len(missed) - 5} more" if len(missed) > 5 else ""
                violations.append(Violation("stale writer read", f"read from the writer missed {len(missed)} "
                                            f"acknowledged write(s) ({shown}{more}; oldest acked {lag:.3f}s "
                                            f"before the read, by op #{missed[0].id})", rd))
            continue
        lag_ops.append(len(missed))
        lag_s.append(lag)
        if missed:
            reader_stale += 1
        over_s = max_reader_lag is not None and lag > max_reader_lag
        over_ops = max_reader_lag_ops is not None and len(missed) > max_reader_lag_ops
        if over_s or over_ops:
            violations.append(Violation("reader lag", f"replica read was {lag:.3f}s / {len(missed)} write(s) "
                                        "behind", rd))
    numbers = {
        "writer_reads": writer_reads, "writer_stale": writer_stale, "reader_reads": len(lag_s),
        "reader_stale": reader_stale, "lag_s_max": max(lag_s, default=None), "lag_s_p50": percentile(lag_s, 50),
        "lag_s_p99": percentile(lag_s, 99), "lag_ops_max": max(lag_ops, default=None),
        "lag_ops_p50": percentile(lag_ops, 50), "lag_ops_p99": percentile(lag_ops, 99),
    }
    lag_bad = sum(v.what == "reader lag" for v in violations)
    valid = writer_stale <= max_writer_stale and lag_bad == 0
    replicas = "no replica reads" if not lag_s else (
        f"{reader_stale} of {len(lag_s)} replica reads behind, max lag {_fmt(numbers['lag_s_max'])}s "
        f"(limit {'none' if max_reader_lag is None else f'{max_reader_lag:g}s'}), {lag_bad} over the limit")
    summary = f"{writer_stale} stale of {writer_reads} writer reads (allowed {max_writer_stale}); {replicas}"
    return CheckResult(name, valid, summary, violations if not valid else [], numbers)


class _Prefix:
    """Acknowledged writes in ack order, grown as reads (sorted by invoke time) need longer prefixes."""

    def __init__(self, acked: list[Operation], model: str) -> None:
        self.acked, self.model = acked, model
        self.keys = [_written(op) for op in acked]
        self.first: dict[Any, int] = {}
        for i, k in enumerate(self.keys):
            self.first.setdefault(k, i)
        self.n = 0
        self.seen_keys: set[Any] = set()
        self.sorted_vals: list[Any] = []

    def missed(self, n: int, value: Any) -> list[Operation]:
        """The first ``n`` acknowledged writes that a read returning ``value`` did not see, oldest first."""
        for i in range(self.n, n):
            self.seen_keys.add(self.keys[i])
            if self.model == "latest":
                bisect.insort(self.sorted_vals, self.acked[i].invoke_value)
        self.n = max(self.n, n)
        if n == 0:
            return []
        if self.model == "set":
            # Set difference runs in C: this is what keeps drills of many thousand reads fast.
            gone = self.seen_keys - read_values(value)
            return [self.acked[i] for i in sorted(self.first[k] for k in gone)]
        if value is not None and bisect.bisect_right(self.sorted_vals, value) == len(self.sorted_vals):
            return []
        return [op for op in self.acked[:n] if value is None or op.invoke_value > value]


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


# -- split brain ------------------------------------------------------------------------------------
def split_brain(history: History, fences: Iterable[Any] | None = None, *, write: str | Iterable[str] = "write",
                grace: float = 0.0, max_writes: int = 0) -> CheckResult:
    """No write may be acknowledged by a fenced node after its fence time (+ ``grace`` s). Fences come
    from ``fences`` (Fence / dicts) or from history markers ``history.event("fence", node=...)``."""
    name = "split-brain"
    fence_list = [Fence.of(f) for f in (fences if fences is not None else history.markers("fence"))]
    if not fence_list:
        return _skip(name, "no fence events (pass fences= or record history.event('fence', node=...))")
    first_fence: dict[str, Fence] = {}
    for fence in sorted(fence_list, key=lambda f: f.time):
        first_fence.setdefault(fence.node, fence)
    violations = []
    for op in history.operations(_fs(write)):
        found = first_fence.get(op.node or "")
        if found is None:
            continue
        fence = found
        if op.ok and op.complete_time is not None and op.complete_time > fence.time + grace:
            late = op.complete_time - fence.time
            violations.append(Violation("split-brain write", f"acknowledged by {fence.node} {late:.3f}s after it "
                                        f"was fenced ({fence.name})", op))
    valid = len(violations) <= max_writes
    summary = (f"{len(violations)} writes acknowledged by fenced nodes after their fence (allowed {max_writes}); "
               f"fenced: {', '.join(sorted(first_fence))}")
    return CheckResult(name, valid, summary, violations if not valid else [],
                       {"fences": len(fence_list), "late_writes": len(violations)})


# -- recovery time ----------------------------------------------------------------------------------
def _first_ok(ops: Sequence[Operation], since: float) -> Operation | None:
    done = [op for op in ops if op.ok and op.invoke_time >= since and op.complete_time is not None]
    return min(done, key=lambda op: op.complete_time or 0.0, default=None)


def recovery(history: History, faults: Iterable[Any], *, write: str | Iterable[str] = "write",
             read: str | Iterable[str] = "read", max_rto: float | None = None) -> CheckResult:
    """RTO per fault window: fault start -> completion of the first ok write invoked once the fault had taken
    effect (and the same for reads): a request that slipped through while the fault was being injected is
    not a recovery. ``after_heal_s`` is how long after the window closed that took."""
    name = "recovery"
    wins = windows(faults)
    if not wins:
        return _skip(name, "no fault windows")
    writes, reads = history.operations(_fs(write)), history.operations(_fs(read))
    per: list[dict[str, Any]] = []
    violations: list[Violation] = []
    rtos: list[float] = []
    for w in wins:
        fw, fr = _first_ok(writes, w.bites), _first_ok(reads, w.bites)
        rto_w = None if fw is None else (fw.complete_time or 0.0) - w.start
        rto_r = None if fr is None else (fr.complete_time or 0.0) - w.start
        after = None if rto_w is None or w.end is None else max(0.0, w.start + rto_w - w.end)
        errors = [op for op in writes if op.invoke_time >= w.start and not op.ok
                  and (fw is None or op.invoke_time < fw.invoke_time)]
        per.append({"fault": w.name, "kind": w.kind, "start": w.start - history.t0,
                    "duration": None if w.end is None else w.end - w.start, "rto_write_s": rto_w,
                    "rto_read_s": rto_r, "after_heal_s": after, "errors_before_recovery": len(errors)})
        if rto_w is None:
            violations.append(Violation("no recovery", f"no successful write after {w.label(history.t0)}"))
        else:
            rtos.append(rto_w)
            if max_rto is not None and rto_w > max_rto:
                violations.append(Violation("slow recovery", f"first successful write {rto_w:.3f}s after the start "
                                            f"of {w.label(history.t0)} (limit {max_rto:g}s)", fw))
    numbers: dict[str, Any] = {"windows": per, "rto_write_s_max": max(rtos, default=None),
               "rto_read_s_max": max((p["rto_read_s"] for p in per if p["rto_read_s"] is not None), default=None)}
    valid = not violations
    summary = (f"max RTO {_fmt(numbers['rto_write_s_max'])}s over {len(wins)} fault window(s) "
               f"(limit {_fmt(max_rto)}s)" + ("" if valid else f", {len(violations)} violation(s)"))
    return CheckResult(name, valid, summary, violations, numbers)


# -- data loss window -------------------------------------------------------------------------------
def data_loss(history: History, faults: Iterable[Any], *, write: str | Iterable[str] = "write",
              final_read: str = "final-read", read: str | Iterable[str] = "read", max_lost: int = 0,
              max_rpo: float | None = None) -> CheckResult:
    """RPO: per fault window, the span from the first lost acknowledged write to the fault start (0 when
    every lost write was acked after the start), and how many were lost. A lost write belongs to the
    first window not closed before its ack."""
    name = "data-loss"
    wins = windows(faults)
    if not wins:
        return _skip(name, "no fault windows")
    loss = _loss(history, write, final_read, read)
    if not loss.final:
        return _skip(name, f"no successful final read (f={final_read!r})")
    per: list[dict[str, Any]] = []
    owned: dict[int, list[Operation]] = {i: [] for i in range(len(wins))}
    unowned: list[Operation] = []
    for op in loss.lost:
        ack = op.complete_time or 0.0
        i = next((i for i, w in enumerate(wins) if w.end is None or w.end >= ack), None)
        (unowned if i is None else owned[i]).append(op)
    violations, rpos = [], []
    for i, w in enumerate(wins):
        ops = owned[i]
        first = min(((op.complete_time or 0.0) for op in ops), default=None)
        rpo = None if first is None else max(0.0, w.start - first)
        if rpo is not None:
            rpos.append(rpo)
        per.append({"fault": w.name, "lost": len(ops), "rpo_s": rpo,
                    "first_lost_t": None if first is None else first - history.t0})
        if max_rpo is not None and rpo is not None and rpo > max_rpo:
            violations.append(Violation("data loss window", f"writes acknowledged up to {rpo:.3f}s before the "
                                        f"start of {w.label(history.t0)} were lost (limit {max_rpo:g}s)",
                                        min(ops, key=lambda op: op.complete_time or 0.0)))
    lost_n = len(loss.lost)
    if lost_n > max_lost:
        violations += [Violation("lost write", "acknowledged write missing from the final read", op)
                       for op in loss.lost]
    numbers: dict[str, Any] = {"lost": lost_n, "rpo_s": max(rpos, default=0.0 if not lost_n else None), "windows": per,
               "lost_outside_windows": len(unowned)}
    valid = not violations
    summary = (f"{lost_n} acknowledged writes lost (allowed {max_lost}), RPO {_fmt(numbers['rpo_s'])}s "
               f"(limit {_fmt(max_rpo)}s)")
    return CheckResult(name, valid, summary, violations, numbers)


# -- availability -----------------------------------------------------------------------------------
def _share(ops: Sequence[Operation]) -> float | None:
    return None if not ops else sum(op.ok for op in ops) / len(ops)


def availability(history: History, faults: Iterable[Any] | None = None, *, f: str | Iterable[str] | None = None,
                 window: tuple[float, float] | None = None, min_availability: float | None = None) -> CheckResult:
    """Share of ok ops among those invoked in each fault window (or in ``window``, monotonic (start, end));
    ``min_availability`` (0..1) applies to each. Pending ops count as not ok."""
    name = "availability"
    ops = history.operations(None if f is None else _fs(f))
    wins = [Window("window", *window)] if window is not None else windows(faults)
    overall = _share(ops)
    per: list[dict[str, Any]] = []
    violations: list[Violation] = []
    for w in wins:
        end = w.end if w.end is not None else float("inf")
        inside = [op for op in ops if w.start <= op.invoke_time <= end]
        share = _share(inside)
        per.append({"fault": w.name, "ops": len(inside), "ok": sum(op.ok for op in inside), "availability": share})
        if min_availability is not None and share is not None and share < min_availability:
            bad = [op for op in inside if not op.ok]
            violations.append(Violation("low availability", f"{share:.1%} of {len(inside)} ops ok during "
                                        f"{w.label(history.t0)} (minimum {min_availability:.1%}); first failure "
                                        "shown", bad[0] if bad else None))
    if not wins and min_availability is not None and overall is not None and overall < min_availability:
        violations.append(Violation("low availability", f"{overall:.1%} of {len(ops)} ops ok (minimum "
                                    f"{min_availability:.1%})"))
    lows = [p["availability"] for p in per if p["availability"] is not None]
    numbers = {"overall": overall, "ops": len(ops), "min_window": min(lows, default=None), "windows": per}
    valid = not violations
    summary = (f"{'-' if overall is None else f'{overall:.1%}'} of {len(ops)} ops ok overall, lowest during a "
               f"fault {'-' if not lows else f'{min(lows):.1%}'} (minimum "
               f"{'-' if min_availability is None else f'{min_availability:.1%}'})")
    return CheckResult(name, valid, summary, violations, numbers)


# -- all together -----------------------------------------------------------------------------------
def _limit(thresholds: Any, name: str, default: Any) -> Any:
    if thresholds is None:
        return default
    value = thresholds.get(name, default) if isinstance(thresholds, Mapping) else getattr(thresholds, name, default)
    return default if value is None and default is not None else value


def check_all(history: History, *, faults: Iterable[Any] | None = None, fences: Iterable[Any] | None = None,
              writer: WriterSpec = None, thresholds: Any = None, checks: Iterable[str] | None = None,
              write: str | Iterable[str] = "write", read: str | Iterable[str] = "read",
              final_read: str = "final-read", model: str = "set") -> Verdict:
    """Run every checker that applies (or exactly ``checks``) with limits from ``thresholds`` (a
    ``Thresholds`` or a mapping of its field names). A checker named in ``checks`` that cannot apply fails."""
    wanted = list(CHECKS if checks is None else checks)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    fault_list = list(faults or ())
    t = thresholds
    runners: dict[str, Callable[[], CheckResult]] = {
        "lost-writes": lambda: lost_writes(history, write=write, final_read=final_read, read=read,
                                           max_lost=_limit(t, "max_lost_writes", 0)),
        "stale-reads": lambda: stale_reads(history, writer=writer, write=write, read=read, model=model,
                                           max_writer_stale=_limit(t, "max_stale_writer_reads", 0),
                                           max_reader_lag=_limit(t, "max_reader_lag", None),
                                           max_reader_lag_ops=_limit(t, "max_reader_lag_ops", None)),
        "split-brain": lambda: split_brain(history, fences, write=write,
                                           max_writes=_limit(t, "max_split_brain_writes", 0)),
        "recovery": lambda: recovery(history, fault_list, write=write, read=read, max_rto=_limit(t, "max_rto", None)),
        "data-loss": lambda: data_loss(history, fault_list, write=write, final_read=final_read, read=read,
                                       max_lost=_limit(t, "max_lost_writes", 0), max_rpo=_limit(t, "max_rpo", None)),
        "availability": lambda: availability(history, fault_list,
                                             min_availability=_limit(t, "min_availability", None)),
    }
    has_final = bool(_final_reads(history, final_read, []))
    results = []
    for check in wanted:
        if checks is None and check in ("lost-writes", "data-loss") and not has_final:
            results.append(_skip(check, f"no final read (record one with f={final_read!r})"))
            continue
        result = runners[check]()
        if checks is not None and result.skipped is not None:
            result = CheckResult(check, False, f"was asked for but cannot run: {result.skipped}")
        results.append(result)
    verdict = Verdict(results)
    logger.info("check_all: %s", "valid" if verdict.valid else verdict.message())
    return verdict
