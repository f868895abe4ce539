"""Encoders of Python values: JSON for jsonb parameters, and add_many's
binary COPY fields (uuid, jsonb, text[]) already in their wire format."""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.string import BytesBinaryDumper


class JsonNumber:
    """A JSON number kept as its text, for one Python's float cannot hold:
    json.loads reads 1e400 as inf, which would go out as Infinity (not JSON);
    PostgreSQL's jsonb keeps it as the number it is. `json_number` makes one."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
# A JsonNumber goes through the encoder as this string, then becomes its
# text again. Only a string holding U+0000 looks the same, and jsonb refuses
# those anyway (22P05).
_MARKED = re.compile(r'"\\u0000#(-?[0-9][-+.0-9eE]*)\\u0000"')


def json_number(text: str) -> float | JsonNumber:
    """json.loads' parse_float: a float, or the text of a number no float
    holds (beyond 1.8e308)."""
    value = float(text)
    return value if math.isfinite(value) else JsonNumber(text)


def _unmark(encoded: str) -> str:
    return _MARKED.sub(r"\1", encoded)


def json_default(value: Any) -> Any:
    """Make the usual non-JSON Python values storable (for event data and params)."""
    if isinstance(value, JsonNumber):
        if not _NUMBER.fullmatch(value.text):
            raise ValueError(f"not a JSON number: {value.text!r}")
        return f"\x00#{value.text}\x00"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


# One encoder for every call: json.dumps with non-default arguments builds a
# new JSONEncoder each time, which costs as much as encoding a small object.
_ENCODER = json.JSONEncoder(default=json_default, separators=(",", ":"))


def dumps(value: Any) -> str:
    encoded = _ENCODER.encode(value)
    return _unmark(encoded) if "\\u0000#" in encoded else encoded


# --- add_many's COPY rows -----------------------------------------------------
# COPY_IN is binary: each value goes in its type's wire format, and no type oid
# goes with it (the server reads each field as its column's type), so
# Copy.set_types only picks the dumper that writes each field. Three columns
# arrive already encoded by QueueBase._rows (retryq_py/_queue_base.py), which
# is cheaper than psycopg's dumpers for them (they run in Python for every
# value):
# - event_id (uuid): its 16 bytes, declared bytea, whose dumper passes bytes
#   through;
# - event_data, event_metadata (jsonb): the version byte 1 and the JSON text,
#   declared text, whose dumper encodes the str (ASCII: the JSON encoder
#   escapes the rest, so the client encoding does not matter);
# - tags (text[]): the array format, built once per distinct tag list in a
#   call, declared bytea.

# COPY_IN's columns, in order.
COPY_TYPES: tuple[str, ...] = (
    ("bytea", "text", "text", "text", "text", "text", "int4")
    + ("float8",) * 4
    + ("int4", "text", "bytea", "timestamptz", "timestamptz")
)


def copy_in_types(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> Sequence[str]:
    """COPY_TYPES, for Copy.set_types on this cursor. The bytea dumper found by
    type is the DB-API Binary one (Python); bytes' own dumper (C with
    psycopg[binary]) is registered for bytea on this cursor only."""
    cursor.adapters.register_dumper(None, BytesBinaryDumper)
    return COPY_TYPES


JSONB_EMPTY_OBJECT = "\x01{}"


def jsonb_encoder() -> Callable[[Any], str]:
    """A function giving jsonb's binary format (as a str: the version byte,
    then dumps(value)), for one add_many call.

    JSONEncoder.encode builds json's C encoder anew for every value, which
    costs as much as encoding a small object; this builds it once per call
    (with the arguments encode would pass). Its circular-reference markers
    are only reliable until an encoding fails, which ends the call anyway.
    """
    make: Any = getattr(json.encoder, "c_make_encoder", None)  # _json's, not in typeshed
    plain = lambda value: "\x01" + dumps(value)  # noqa: E731
    if make is None:  # no C accelerator: the plain encoder
        return plain
    numbers: list[None] = []

    def default(value: Any) -> Any:
        if isinstance(value, JsonNumber):
            numbers.append(None)
        return json_default(value)

    try:
        encode = make(
            {},
            default,
            json.encoder.encode_basestring_ascii,
            None,
            _ENCODER.key_separator,
            _ENCODER.item_separator,
            False,
            False,
            True,
        )
    except TypeError:  # an interpreter whose internal signature differs
        return plain
    join = "".join

    def jsonb(value: Any) -> str:
        encoded = join(encode(value, 0))
        if numbers:  # a JsonNumber was met: nothing to look for otherwise
            numbers.clear()
            encoded = _unmark(encoded)
        return "\x01" + encoded

    return jsonb


_TEXT = psycopg.adapters.types["text"].oid
EMPTY_TEXT_ARRAY = struct.pack("!iiI", 0, 0, _TEXT)


def text_array(values: Iterable[str | None], encoding: str) -> bytes:
    """text[]'s binary wire format: one dimension (none when empty), the element
    type, then each element as a length and its bytes (-1 for NULL)."""
    parts = [b""]
    has_null = 0
    for value in values:
        if value is None:
            parts.append(b"\xff\xff\xff\xff")
            has_null = 1
        elif isinstance(value, str):
            data = value.encode(encoding)
            parts.append(len(data).to_bytes(4, "big") + data)
        else:
            raise TypeError(f"tags: expected strings, got {value!r}")
    if len(parts) == 1:
        return EMPTY_TEXT_ARRAY
    parts[0] = struct.pack("!iiIii", 1, has_null, _TEXT, len(parts) - 1, 1)
    return b"".join(parts)


def uuid_loader() -> Callable[[bytes], UUID]:
    """psycopg's own loader of uuid's binary format (16 bytes to a UUID): with
    psycopg[binary] it is C, several times faster than UUID(bytes=...)."""
    oid = psycopg.adapters.types["uuid"].oid
    loader = psycopg.adapters.get_loader(oid, psycopg.pq.Format.BINARY)
    if loader is None:  # not with psycopg's default adapters
        return lambda data: UUID(bytes=data)
    load: Callable[[bytes], UUID] = loader(oid, None).load
    return load


def random_uuids(count: int) -> bytes:
    """count version-4 UUIDs (as uuid4 makes them), 16 bytes each, in one
    os.urandom call."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    return bytes(raw)
