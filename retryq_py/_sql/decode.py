"""Rows that Python cannot decode, read all the same: the one rule for the
worker, the queue clients and the views.

PostgreSQL stores JSON that Python's json cannot read back: a number with
more digits than Python's int conversion allows (4300; jsonb writes 1e5000
out in full), an array or object nested deeper than Python recurses. Decoded
as a batch, one such row fails the whole read. `decode_rows` decodes the
batch as usual and, only when that raises, each field on its own: a field
that fails holds the text the server sent (`RawJson` for a json or jsonb
column), and the row says why it failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.adapt import Transformer
from psycopg.pq import Format

# The error code of a leased item failed for good because it cannot be
# decoded (the worker's and acquire()'s), with the reason as its message.
UNDECODABLE = "retryq.undecodable_item"

T = TypeVar("T")

_JSON_OIDS = frozenset(psycopg.adapters.types[n].oid for n in ("json", "jsonb"))
_JSONB_OID = psycopg.adapters.types["jsonb"].oid


class RawJson(str):
    """A json or jsonb value Python cannot decode, as the JSON text the
    server sent (for jsonb: normalised, numbers written out in full)."""

    __slots__ = ()


def json_text(value: Any, **dumps: Any) -> str:
    """value as JSON text for a person: json.dumps(value, **dumps), or the
    server's text as it is for a RawJson."""
    if isinstance(value, RawJson):
        return str(value)
    return json.dumps(value, **dumps)


def _raw(data: Any, oid: int, fmt: Format) -> str:
    raw = bytes(data)
    if fmt == Format.BINARY and oid == _JSONB_OID and raw[:1] == b"\x01":
        raw = raw[1:]  # jsonb's binary format: a version byte, then the text
    text = raw.decode("utf-8", "replace")
    return RawJson(text) if oid in _JSON_OIDS else text


def row_fields(cursor: Any, make: Callable[..., T]) -> Iterator[tuple[T, str | None]]:
    """The cursor's result, each row built by make(**columns) with each
    column decoded on its own: (row, None) for a row that decodes, (row,
    why) for one that does not, its failing fields holding their text as
    the server sent it (RawJson for JSON). RuntimeError when the columns
    do not fit `make` (a schema change, not a value's fault)."""
    res = cursor.pgresult
    if res is None:
        return
    tx = Transformer.from_context(cursor)
    names = [res.fname(i).decode() for i in range(res.nfields)]
    types = [(res.ftype(i), Format(res.fformat(i))) for i in range(res.nfields)]
    loaders = [tx.get_loader(oid, fmt) for oid, fmt in types]
    for row in range(res.ntuples):
        values: dict[str, Any] = {}
        bad: list[str] = []
        for col, name in enumerate(names):
            data = res.get_value(row, col)
            if data is None:
                values[name] = None
                continue
            try:
                values[name] = loaders[col].load(data)
            except Exception as exc:  # any loader's error: this field only
                values[name] = _raw(data, *types[col])
                bad.append(f"{name} ({type(exc).__name__}: {str(exc)[:200]})")
        try:
            built = make(**values)
        except TypeError as exc:
            raise RuntimeError(f"unexpected columns {names}") from exc
        yield built, ("cannot decode " + ", ".join(bad)) if bad else None


def split_undecodable(
    rows: Iterable[tuple[T, str | None]],
) -> tuple[list[T], list[tuple[T, str]]]:
    """row_fields' rows: those that decode, and those that do not with why."""
    good: list[T] = []
    bad: list[tuple[T, str]] = []
    for row, why in rows:
        if why is None:
            good.append(row)
        else:
            bad.append((row, why))
    return good, bad
