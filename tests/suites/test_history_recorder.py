"""History: the op() API and its exception classification, record(), markers, thread safety, JSON lines,
time-bucketed series."""
from __future__ import annotations

import io
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from suites.history import FAIL, INFO, OK, PENDING, History, jsonable, percentile


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_op_completes_ok_on_normal_exit_with_latency_endpoint_and_node() -> None:
    clock = FakeClock()
    h = History(clock=clock, wall_clock=lambda: 5.0)
    with h.op(1, "write", value=7, endpoint="db.example", node="127.0.0.5") as op:
        clock.now += 0.25
    assert op.done and op.completion is not None and op.completion.type == OK
    [done] = h.operations()
    assert (done.f, done.value, done.type, done.endpoint, done.node) == ("write", 7, OK, "db.example", "127.0.0.5")
    assert done.latency == pytest.approx(0.25)
    assert [e.type for e in h.events] == ["invoke", "ok"] and h.events[1].latency == pytest.approx(0.25)


def test_read_result_replaces_invoke_value_and_node_learned_mid_op() -> None:
    h = History()
    with h.op(2, "read", endpoint="reader.example") as op:
        op.set_node("127.0.0.9")
        op.ok({3, 1, 2})
    [rd] = h.operations()
    assert rd.value == {1, 2, 3} and rd.invoke_value is None and rd.node == "127.0.0.9"


def test_real_refused_connection_is_a_definite_fail_and_is_swallowed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    h = History()
    with h.op(0, "write", value=1) as op:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert op.completion is not None and op.completion.type == FAIL
    assert "ConnectionRefusedError" in (op.completion.error or "")


@pytest.mark.parametrize(("exc", "expected"), [
    (TimeoutError("timed out"), INFO),
    (ConnectionResetError("reset mid-commit"), INFO),
    (RuntimeError("anything unknown"), INFO),
    (ConnectionRefusedError("refused"), FAIL),
])
def test_default_classification(exc: Exception, expected: str) -> None:
    h = History()
    with h.op(0, "write", value=1):
        raise exc
    assert h.operations()[0].type == expected


def test_nearest_class_in_the_mro_wins_and_per_op_override() -> None:
    class Rollback(ConnectionError):
        pass

    h = History(fail_on=(Rollback,), info_on=(ConnectionError,))
    with h.op(0, "write", value=1):
        raise Rollback("serialization failure")
    with h.op(0, "write", value=2):
        raise ConnectionAbortedError("lost")
    with h.op(0, "write", value=3, fail_on=(ConnectionError,), info_on=()):
        raise ConnectionAbortedError("lost, but this client knows it never sent")
    assert [op.type for op in h.operations()] == [FAIL, INFO, FAIL]


def test_classify_callable_first_and_bad_answer_refused() -> None:
    h = History(classify=lambda e: "fail" if "too many clients" in str(e) else None)
    with h.op(0, "write", value=1):
        raise OSError("FATAL:  sorry, too many clients already")
    with h.op(0, "write", value=2):
        raise OSError("something else")
    assert [op.type for op in h.operations()] == [FAIL, INFO]
    bad = History(classify=lambda e: "maybe")
    with pytest.raises(ValueError, match="must return 'fail', 'info' or None"), bad.op(0, "write", value=1):
        raise OSError("x")


def test_programming_errors_and_keyboard_interrupt_are_recorded_and_reraised() -> None:
    h = History()
    with pytest.raises(AttributeError), h.op(0, "write", value=1):
        None.nope  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(KeyboardInterrupt), h.op(0, "write", value=2):
        raise KeyboardInterrupt
    assert [op.type for op in h.operations()] == [INFO, INFO]


def test_reraise_flag_and_explicit_fail_inside_block() -> None:
    h = History(reraise=True)
    with pytest.raises(TimeoutError), h.op(0, "write", value=1):
        raise TimeoutError
    with h.op(0, "write", value=2) as op:
        op.fail("ERROR: duplicate key")
    with h.op(0, "write", value=3, reraise=False):
        raise TimeoutError
    assert [(op.type, op.error) for op in h.operations()] == [
        (INFO, "TimeoutError: "), (FAIL, "ERROR: duplicate key"), (INFO, "TimeoutError: ")]


def test_completing_twice_is_an_error() -> None:
    h = History()
    op = h.invoke(0, "write", 1)
    op.ok()
    with pytest.raises(RuntimeError, match="already completed as ok"):
        op.info()


def test_record_validates_and_pending_ops_show_as_pending() -> None:
    h = History()
    with pytest.raises(ValueError, match="type must be one of"):
        h.record(0, "write", "done")
    with pytest.raises(ValueError, match="needs the id of its invoke"):
        h.record(0, "write", "ok")
    h.invoke(0, "write", 1)
    assert h.operations()[0].type == PENDING and h.counts()["pending"] == 1


def test_markers_are_kept_apart_from_client_ops() -> None:
    h = History()
    h.event("fence", node="127.0.0.5")
    with h.op(0, "write", value=1):
        pass
    assert [op.f for op in h.operations()] == ["write"]
    [fence] = h.markers("fence")
    assert fence.node == "127.0.0.5" and fence.process == "nemesis"
    assert h.counts() == {"ok": 1, "fail": 0, "info": 0, "pending": 0, "total": 1}


def test_thread_safe_under_concurrent_writers() -> None:
    h = History()
    threads_n, per = 8, 400
    barrier = threading.Barrier(threads_n)

    def work(p: int) -> None:
        barrier.wait(10)
        for i in range(per):
            with h.op(p, "write", value=(p, i)) as op:
                if i % 7 == 0:
                    op.info("timeout")

    threads = [threading.Thread(target=work, args=(p,)) for p in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    events = h.events
    assert [e.index for e in events] == list(range(2 * threads_n * per))
    by_id: dict[int, list[str]] = {}
    for e in events:
        by_id.setdefault(e.id, []).append(e.type)
    assert len(by_id) == threads_n * per
    assert all(types[0] == "invoke" and len(types) == 2 for types in by_id.values())
    ops = h.operations()
    assert {op.value for op in ops} == {(p, i) for p in range(threads_n) for i in range(per)}
    assert all(op.latency is not None and op.latency >= 0 for op in ops)
    assert sum(op.type == INFO for op in ops) == threads_n * len(range(0, per, 7))


def test_json_lines_round_trip(tmp_path: Path) -> None:
    h = History(name="rt")
    with h.op(0, "write", value=1, endpoint="w", node="n1"):
        pass
    with h.op(1, "read", endpoint="r") as op:
        op.ok({2, 1})
    with h.op(0, "write", value=2):
        raise TimeoutError("slow")
    h.event("fence", node="n1")
    h.invoke(3, "write", 3)
    path = h.dump(tmp_path / "h.jsonl")
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"history": {"name": "rt", "t0": h.t0}}
    back = History.load(path)
    assert back.name == "rt" and back.t0 == h.t0
    assert back.counts() == h.counts() == {"ok": 2, "fail": 0, "info": 1, "pending": 1, "total": 4}
    assert [o.to_dict() for o in back.operations()] == [
        {**o.to_dict(), "value": jsonable(o.value)} for o in h.operations()]
    assert back.operations()[1].value == [1, 2]
    assert back.markers("fence")[0].node == "n1"
    nxt = back.invoke(0, "write", 9)
    assert nxt.id > max(e.id for e in h.events)
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        History.read_jsonl(io.StringIO('{"history": {}}\nnot json\n'))
    with pytest.raises(ValueError, match="lacks"):
        History.from_list([{"type": "ok"}])


def test_series_buckets_counts_throughput_and_latency_percentiles() -> None:
    h = History(t0=0.0)

    def op(start: float, end: float, type_: str) -> None:
        ev = h.record(0, "write", "invoke", 1, time=start)
        h.record(0, "write", type_, None, id=ev.id, time=end)

    for i in range(10):  # bucket 0: ten ok ops with latencies 5..50 ms
        op(0.1 * i, 0.1 * i + 0.005 * (i + 1), OK)
    op(1.2, 1.5, FAIL)
    op(1.6, 1.7, INFO)
    op(2.1, 2.3, OK)
    s = h.series(1.0)
    assert s.t == [0.0, 1.0, 2.0]
    assert (s.ok, s.fail, s.info) == ([10, 0, 1], [0, 1, 0], [0, 1, 0])
    assert s.throughput == [10.0, 0.0, 1.0]
    assert s.p50[0] == pytest.approx(0.025) and s.p99[0] == pytest.approx(0.05)
    assert s.p50[1] is None and s.p99[2] == pytest.approx(0.2)
    assert h.series(0.5, start=0.0, end=3.0).t == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    with pytest.raises(ValueError, match="bucket must be > 0"):
        h.series(0)


def test_percentile_nearest_rank() -> None:
    values: list[Any] = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99, 100)
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0
