"""DynamoDB item arithmetic by AWS's documented rules: item sizes, capacity units, and what an item puts
into each secondary index (its key and projected size), on the wire form ``{"attr": {"S": "..."}}``."""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

WRITE_UNIT = 1024
READ_UNIT = 4096

Attrs = dict[str, Any]


def _number_size(text: str) -> int:
    digits = text.strip().lstrip("+-").lower().split("e", 1)[0].replace(".", "").strip("0")
    return math.ceil(max(len(digits), 1) / 2) + 1


def _binary_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, TypeError):
        return len(str(value).encode())


def value_size(value: dict[str, Any]) -> int:
    """Size of one attribute value: strings and binaries by their bytes, numbers ~1 byte per two significant
    digits + 1, booleans/null 1, lists/maps 3 + 1 per element + the elements (map keys count)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return _number_size(inner)
    if kind == "B":
        return _binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(_number_size(n) for n in inner)
    if kind == "BS":
        return sum(_binary_size(b) for b in inner)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in inner.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(attrs: Attrs | None) -> int:
    """Size in bytes of an item: the sum of its attribute names' and values' sizes."""
    if not attrs:
        return 0
    return sum(len(name.encode()) + value_size(v) for name, v in attrs.items())


def write_units(size: int) -> int:
    """Write capacity units for one item of ``size`` bytes: 1 KB units, rounded up, at least 1."""
    return max(1, math.ceil(size / WRITE_UNIT))


def read_units(size: int, *, consistent: bool = False, transactional: bool = False) -> float:
    """Read capacity units for ``size`` bytes read: 4 KB units rounded up (at least 1); eventually consistent
    reads half of that, transactional reads double."""
    units = float(max(1, math.ceil(size / READ_UNIT)))
    if transactional:
        return units * 2
    return units if consistent else units / 2


def moto_attrs(item: Any) -> Attrs | None:
    """Wire form of a moto ``Item`` (None stays None)."""
    if item is None:
        return None
    attrs: Attrs = item.to_json()["Attributes"]
    return attrs


@dataclass(frozen=True)
class IndexEntry:
    """What one item puts into one secondary index: the index key values and the projected size."""

    key: tuple[str, ...]
    projected: tuple[tuple[str, str], ...]
    size: int


def index_entry(index: Any, table_keys: list[str], attrs: Attrs | None) -> IndexEntry | None:
    """The entry ``attrs`` makes in moto index ``index`` (a sparse index has none for items lacking its keys)."""
    if not attrs:
        return None
    index_keys = [k["AttributeName"] for k in index.schema]
    if any(k not in attrs for k in index_keys):
        return None
    projection = (index.projection or {}).get("ProjectionType", "ALL")
    if projection == "ALL":
        projected = attrs
    else:
        wanted = set(table_keys) | set(index_keys)
        if projection == "INCLUDE":
            wanted |= set((index.projection or {}).get("NonKeyAttributes", []))
        projected = {k: v for k, v in attrs.items() if k in wanted}
    key = tuple(repr(attrs[k]) for k in index_keys)
    return IndexEntry(key, tuple(sorted((k, repr(v)) for k, v in projected.items())), item_size(projected))


def index_write_units(old: IndexEntry | None, new: IndexEntry | None) -> int:
    """Index write cost of one table write, by AWS's rules: put into / delete from the index 1 write each,
    a changed index key 2 writes (delete + put), changed projected attributes 1 write, nothing else 0."""
    if old is None and new is None:
        return 0
    if old is None:
        assert new is not None
        return write_units(new.size)
    if new is None:
        return write_units(old.size)
    if old.key != new.key:
        return write_units(old.size) + write_units(new.size)
    if old.projected != new.projected:
        return write_units(new.size)
    return 0


@dataclass
class Footprint:
    """An item as capacity sees it: its size, its entry in each secondary index (by name) and its partition
    key value (``partition_of``; None when absent)."""

    size: int
    gsi: dict[str, IndexEntry | None]
    lsi: dict[str, IndexEntry | None]
    partition: str | None = None


def partition_of(table: Any, attrs: Any) -> str | None:
    """The item's (or key's) partition key value as a stable string, None without one."""
    name = getattr(table, "hash_key_attr", None)
    value = attrs.get(name) if isinstance(attrs, dict) and name else None
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if value is not None else None


def footprint(table: Any, attrs: Attrs | None) -> Footprint:
    keys = list(table.table_key_attrs)
    return Footprint(
        size=item_size(attrs),
        gsi={g.name: index_entry(g, keys, attrs) for g in table.global_indexes},
        lsi={i.name: index_entry(i, keys, attrs) for i in table.indexes},
        partition=partition_of(table, attrs),
    )
