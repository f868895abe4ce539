"""timestamptz loaders that read PostgreSQL's 'infinity' and '-infinity'.

psycopg refuses them (DataError "timestamp too small"), so one row with an
infinite time (the owner may write one; rows from before migration 0019
may hold one) made every read of the queue fail. Loaded here as the
furthest moments Python has, tz-aware: INFINITY and NEG_INFINITY, shown as
'infinity' and '-infinity' (`infinite_text`). Registered on the connections
retryq opens and on the cursors its clients and ops open on the caller's
connection (the caller's own queries keep psycopg's loaders).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import abc
from psycopg.abc import AdaptContext
from psycopg.adapt import Loader
from psycopg.pq import Format

INFINITY = datetime.max.replace(tzinfo=timezone.utc)
NEG_INFINITY = datetime.min.replace(tzinfo=timezone.utc)

_TIMESTAMPTZ = psycopg.adapters.types["timestamptz"].oid
_TEXT = {b"infinity": INFINITY, b"-infinity": NEG_INFINITY}
_BINARY = {
    (2**63 - 1).to_bytes(8, "big", signed=True): INFINITY,
    (-(2**63)).to_bytes(8, "big", signed=True): NEG_INFINITY,
}


def _loader(fmt: Format, infinite: dict[bytes, datetime]) -> type[Loader]:
    # psycopg's C loaders cannot be subclassed: this one wraps one
    found = psycopg.adapters.get_loader(_TIMESTAMPTZ, fmt)
    assert found is not None  # psycopg's default adapters have both
    base: type[abc.Loader] = found

    class InfiniteLoader(Loader):
        format = fmt

        def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
            super().__init__(oid, context)
            self._base = base(oid, context)

        def load(self, data: Any) -> datetime:
            moment = infinite.get(bytes(data))
            return moment if moment is not None else self._base.load(data)

    return InfiniteLoader


_TEXT_LOADER = _loader(Format.TEXT, _TEXT)
_BINARY_LOADER = _loader(Format.BINARY, _BINARY)


def load_infinite_timestamps(context: AdaptContext) -> None:
    """timestamptz values, infinite ones included, for this connection or cursor."""
    context.adapters.register_loader(_TIMESTAMPTZ, _TEXT_LOADER)
    context.adapters.register_loader(_TIMESTAMPTZ, _BINARY_LOADER)


def infinite_text(value: datetime) -> str | None:
    """'infinity' or '-infinity' for the moments the loaders give for them, else None."""
    if value == INFINITY:
        return "infinity"
    if value == NEG_INFINITY:
        return "-infinity"
    return None
