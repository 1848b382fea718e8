"""A stack opened and closed inside another (a nested run, a CLI command in a test) gives the faults' default
Toxiproxy client back to the outer stack instead of leaving one that points at a stopped server."""
from __future__ import annotations

from harness.stack import Stack
from harness.toxiproxy import current_default


def test_inner_stack_restores_the_outer_default() -> None:
    before = current_default()
    with Stack() as outer:
        outer_client = outer.toxiproxy
        assert current_default() is outer_client
        with Stack() as inner:
            inner_client = inner.toxiproxy  # made on first use
            assert current_default() is inner_client
        assert current_default() is outer_client
        assert outer_client.version()  # still a live server behind it
    assert current_default() is before
