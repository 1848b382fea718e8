"""Deadline-bound waiting on a condition (tenacity underneath), for readiness checks in code and tests."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed
from tenacity.retry import retry_base

from harness.errors import HarnessError

T = TypeVar("T")


class WaitTimeout(HarnessError):
    """The condition did not hold before the deadline."""


def wait_until(
    pred: Callable[[], T | None],
    timeout: float = 10.0,
    *,
    interval: float = 0.01,
    what: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``pred`` every ``interval`` s until it returns something truthy (returned) or ``timeout``
    passes (WaitTimeout naming ``what``). Exceptions in ``ignore`` count as "not yet"."""
    retry: retry_base = retry_if_result(lambda r: not r)
    if ignore:
        retry = retry | retry_if_exception_type(ignore)
    try:
        result = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval), retry=retry)(pred)
        assert result is not None  # the retry only stops on a truthy result
        return result
    except RetryError as exc:
        last = exc.last_attempt
        detail = f" (last error: {last.exception()!r})" if last.failed else ""
        raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what or pred!r}{detail}") from None
