"""The worker's SQL: its flush statements and LISTEN, and how it reads leased rows.

The flush fills its statements in as text (see worker/flush.py), so they are
rendered once per connection encoding here; the templates themselves are
the ones in `retryq_py._sql`, which name the functions in schema/retryq.sql.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from json import loads as _json_loads
from typing import TYPE_CHECKING, Any, NamedTuple

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import JsonbLoader

from retryq_py._sql import ACQUIRE, COMPLETE_MANY, COMPLETED_AT, FAIL, RetryQueueItem, compose

if TYPE_CHECKING:
    from psycopg.abc import AdaptContext
    from typing_extensions import LiteralString

# complete_retry_items' count comes with the transaction's now(): the
# completed_at of what it completed, should some turn out to be lost.
COMPLETE_MANY_AT: LiteralString = COMPLETE_MANY.rstrip() + ", now()\n"

LISTEN: LiteralString = "LISTEN {channel}"


def listen(channel: str) -> sql.Composed:
    return sql.SQL(LISTEN).format(channel=sql.Identifier(channel))


class FlushText(NamedTuple):
    """The flush's statements as text, and the worker id as a quoted literal."""

    fail: str
    complete_at: str
    acquire: str
    worker: str


class FlushStatements:
    """The flush's statements composed once for one schema."""

    def __init__(self, schema: str | None) -> None:
        self.fail = compose(FAIL, schema)
        self.complete_at = compose(COMPLETE_MANY_AT, schema)
        self.acquire = compose(ACQUIRE, schema)
        self.completed_at = compose(COMPLETED_AT, schema)

    def as_text(self, worker_id: str, context: AdaptContext) -> FlushText:
        """Rendered with the connection's encoding: the flush then fills the two
        statements of every flush in with `%` instead of mogrify."""
        return FlushText(
            self.fail.as_string(context),
            self.complete_at.as_string(context),
            self.acquire.as_string(context),
            sql.Literal(worker_id).as_string(context),
        )


_ITEM_FIELD_NAMES = [f.name.encode() for f in dataclasses.fields(RetryQueueItem)]


def item_rows(cursor: Any) -> Callable[[Sequence[Any]], RetryQueueItem]:
    """acquire's rows as RetryQueueItem by position (class_row builds a
    keyword dict per row); by name should the columns ever differ. Checked
    on the raw result: `description` builds an object per column."""
    res = cursor.pgresult
    if res is None or [res.fname(i) for i in range(res.nfields)] != _ITEM_FIELD_NAMES:
        return class_row(RetryQueueItem)(cursor)
    return lambda values: RetryQueueItem(*values)


class JsonbFromText(JsonbLoader):
    """jsonb as json.loads(str): given bytes, json.loads first guesses their
    encoding, which costs as much as parsing a small document."""

    def load(self, data: Any) -> Any:
        return _json_loads(bytes(data).decode())
