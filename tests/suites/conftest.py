"""Fixtures for the drill-evidence tests (helpers in evidence_kit.py)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from evidence_kit import KvCrash, KvService, Script, Workers, fault_window


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def window() -> Callable[..., dict[str, Any]]:
    return fault_window


@pytest.fixture
def kv_factory(tmp_path: Path) -> Iterator[Callable[[str], KvService]]:
    made: list[KvService] = []

    def make(mode: str = "durable") -> KvService:
        d = tmp_path / f"kv{len(made)}"
        d.mkdir()
        kv = KvService(d, mode)
        made.append(kv)
        kv.executor.start()
        return kv

    yield make
    for kv in made:
        kv.executor.stop()


@pytest.fixture
def workers() -> type[Workers]:
    return Workers


@pytest.fixture
def kv_crash() -> type[KvCrash]:
    return KvCrash
