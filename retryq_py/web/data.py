"""What each screen of the dashboard reads, as plain functions over a Target.

The actions (requeue, purge, circuits) are retryq_py.admin's, which call the
SQL functions; this module only reads (retryq_py._sql.web).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from retryq_py import ops
from retryq_py._sql import web as _w
from retryq_py._sql.ops import Circuit
from retryq_py._sql.web import Backlog, HourCounts, ItemFilter, ItemRow, Oldest, WorkerSeen
from retryq_py.admin import Target, connect

__all__ = [
    "Backlog",
    "HourCounts",
    "ItemFilter",
    "ItemPage",
    "ItemRow",
    "Oldest",
    "Overview",
    "WorkerSeen",
    "cancellable",
    "item_page",
    "overview",
    "workers_seen",
]


@contextmanager
def _reading(t: Target) -> Iterator[psycopg.Connection[Any]]:
    """A connection for the dashboard's reads (see _sql.web.SESSION)."""
    with connect(t) as conn:
        conn.execute(_w.SESSION)
        yield conn


@dataclass(frozen=True)
class Overview:
    sizes: dict[str, float]
    completed_is_estimate: bool
    expired_leases: int
    backlog: list[Backlog]
    oldest: Oldest
    hours: list[HourCounts]
    circuits: list[Circuit]

    @property
    def due(self) -> int:
        return sum(b.due for b in self.backlog)

    @property
    def scheduled(self) -> int:
        return sum(b.scheduled for b in self.backlog)


def overview(t: Target, hours: int = 24) -> Overview:
    """The overview screen: sizes, backlog per event type, the oldest pending
    item, and per hour the completions, failures and dead letters."""
    with _reading(t) as conn:
        m = ops.collect_queue_metrics(conn, t.schema)
        with conn.cursor(row_factory=class_row(Backlog)) as cur:
            backlog = cur.execute(_w.BACKLOG).fetchall()
        with conn.cursor(row_factory=class_row(Oldest)) as cur:
            oldest = cur.execute(_w.OLDEST_PENDING).fetchone()
        with conn.cursor(row_factory=class_row(HourCounts)) as cur:
            per_hour = cur.execute(_w.HOURLY, {"hours": hours}).fetchall()
    assert oldest is not None
    return Overview(
        sizes=m.sizes,
        completed_is_estimate=m.completed_is_estimate,
        expired_leases=m.expired_leases,
        backlog=backlog,
        oldest=oldest,
        hours=per_hour,
        circuits=m.circuits,
    )


@dataclass(frozen=True)
class ItemPage:
    rows: list[ItemRow]
    next_before: int | None  # the `before` of the next page; None on the last


def item_page(t: Target, filt: ItemFilter, before: int | None = None, limit: int = 50) -> ItemPage:
    """One page of items, newest id first, below id `before` (keyset)."""
    with _reading(t) as conn, conn.cursor(row_factory=class_row(ItemRow)) as cur:
        rows = cur.execute(_w.ITEMS, filt.params(before, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return ItemPage(rows, rows[-1].id if more and rows else None)


def cancellable(t: Target, filt: ItemFilter) -> list[ItemRow]:
    """Every item the filter shows that a cancel may act on (pending or
    processing), newest first."""
    with _reading(t) as conn, conn.cursor(row_factory=class_row(ItemRow)) as cur:
        return cur.execute(_w.CANCELLABLE, filt.params(None, 0)).fetchall()


def workers_seen(t: Target, window: timedelta = timedelta(hours=1)) -> list[WorkerSeen]:
    """Workers holding a lease now or seen failing an attempt within `window`."""
    with _reading(t) as conn, conn.cursor(row_factory=class_row(WorkerSeen)) as cur:
        return cur.execute(_w.WORKERS, {"window": window}).fetchall()
