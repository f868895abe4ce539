"""`retryq enqueue`, `stats`, `cleanup` and `cancel`: items in, numbers out,
old ones gone, unwanted ones ended."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from retryq_py._sql import Enqueued, StatsRow, compose
from retryq_py._sql import ops as _q
from retryq_py._sql.ops import CancelFilter as CancelFilter
from retryq_py.admin.target import Target, UsageProblem, connect, queue, refusal

# --- enqueue -----------------------------------------------------------------


def enqueue(t: Target, event_type: str, data: Any, **options: Any) -> Enqueued:
    """Add one item (RetryQueue.add's keywords); returns (id, event_id)."""
    with connect(t) as conn:
        return queue(conn, t).add(event_type, data, **options)


ENQUEUE_CHUNK = 5000


def enqueue_many(
    t: Target, items: list[dict[str, Any]], *, chunk: int = ENQUEUE_CHUNK
) -> list[Enqueued]:
    """Add parsed JSON lines with bulk calls of `chunk` items in one transaction:
    all or nothing, with statements of bounded size. When the queue rejects a
    value, each line is tried alone in a rolled-back transaction to name the
    first bad one."""
    lines = [int(i.get("_line", n)) for n, i in enumerate(items, start=1)]
    clean = [{k: v for k, v in i.items() if k != "_line"} for i in items]
    with connect(t) as conn:
        q = queue(conn, t)
        try:
            added: list[Enqueued] = []
            with conn.transaction():
                for start in range(0, len(clean), chunk):
                    added.extend(q.add_many(clean[start : start + chunk]))
            return added
        except (psycopg.DataError, psycopg.IntegrityError, TypeError, ValueError) as exc:
            bad = _first_bad_line(conn, t, clean, lines)
            if bad is None:
                raise UsageProblem(f"{refusal(exc)}; nothing was added") from exc
            number, err = bad
            raise UsageProblem(f"line {number}: {err}; nothing was added") from exc


def _first_bad_line(
    conn: psycopg.Connection[Any],
    t: Target,
    items: list[dict[str, Any]],
    lines: list[int],
) -> tuple[int, str] | None:
    q = queue(conn, t)
    with conn.transaction(force_rollback=True):
        for number, item in zip(lines, items, strict=True):
            try:
                with conn.transaction():
                    q.add_many([item])
            except (psycopg.DataError, psycopg.IntegrityError, TypeError, ValueError) as exc:
                # one item per call: the line number says which
                return number, refusal(exc).replace("item 0: ", "", 1)
    return None


# --- stats -------------------------------------------------------------------

STATUSES = ("pending", "processing", "completed", "dead_letter", "cancelled")


@dataclass(frozen=True)
class Stats:
    rows: list[StatsRow]

    @property
    def totals(self) -> dict[str, int]:
        """Items per status, every status present (zero when none)."""
        out = dict.fromkeys(STATUSES, 0)
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + r.item_count
        return out

    @property
    def total(self) -> int:
        return sum(r.item_count for r in self.rows)


def _status_order(row: StatsRow) -> tuple[int, str, str]:
    rank = STATUSES.index(row.status) if row.status in STATUSES else len(STATUSES)
    return rank, row.event_type, row.plugin_name or ""


def stats(t: Target) -> Stats:
    """daz_retry_queue_stats, in lifecycle order (pending first)."""
    with connect(t) as conn:
        return Stats(sorted(queue(conn, t).stats(), key=_status_order))


# --- cleanup -----------------------------------------------------------------


@dataclass(frozen=True)
class Cleaned:
    deleted: int
    archived: int
    batches: int


def cleanup_due(t: Target, retention_days: int) -> int:
    """How many finished items are older than the retention (for a progress bar)."""
    with connect(t) as conn:
        row = conn.execute(_q.CLEANUP_DUE, (retention_days,)).fetchone()
        return int(row[0]) if row else 0


def cleanup(
    t: Target,
    retention_days: int = 7,
    *,
    batch_size: int = 5000,
    archive: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> Cleaned:
    """Remove finished items past retention in batches of batch_size, each its
    own transaction so locks stay short on a big table; on_batch(deleted,
    archived) after each."""
    if retention_days < 0:
        raise UsageProblem("invalid --retention-days: must not be negative")
    if batch_size < 1:
        raise UsageProblem("invalid --batch-size: must be at least 1")
    deleted = archived = batches = 0
    with connect(t) as conn:
        q = queue(conn, t)
        while True:
            r = q.cleanup(
                retention_days,
                batch_size=batch_size,
                max_rows=batch_size,
                archive_dead_letters=archive,
            )
            deleted += r.deleted_count
            archived += r.archived_count
            batches += 1
            if on_batch is not None:
                on_batch(r.deleted_count, r.archived_count)
            if r.deleted_count < batch_size:
                return Cleaned(deleted, archived, batches)


# --- cancel ------------------------------------------------------------------


@dataclass(frozen=True)
class Cancelled:
    """What `retryq cancel` did. `matched`: the pending and processing items
    the filter chose when asked; `cancelled`: how many it cancelled (0 when
    declined); `skipped`: each given id that was not pending or processing,
    with its status ('completed', 'dead_letter', 'cancelled') or None when the
    queue has no such item."""

    matched: int
    cancelled: int
    declined: bool = False
    skipped: dict[int, str | None] = field(default_factory=dict)


def cancel_items(
    t: Target, filt: CancelFilter, confirm: Callable[[int], bool] | None = None
) -> Cancelled:
    """Cancel the pending and processing items the filter chooses (one SQL
    call, so one transaction). confirm(count) is asked first and may veto.
    A filter is required (UsageProblem otherwise). An item chosen when asked
    but finished or held by another transaction when cancelled is not counted;
    one enqueued in between that matches the filter is."""
    if filt.is_empty():
        raise UsageProblem(
            "cancel needs a filter: --id, --event-type, --plugin, --error-code or "
            "--older-than (--older-than 0s selects every pending and processing item)"
        )
    ids = list(filt.ids) or None
    with connect(t) as conn:
        q = queue(conn, t)
        created_before: datetime | None = None
        if filt.older_than is not None:
            row = conn.execute(_q.AGO, (filt.older_than,)).fetchone()
            created_before = row[0] if row else None
        skipped: dict[int, str | None] = {}
        if ids:
            found = dict(
                conn.execute(compose(_q.ITEM_STATUSES, t.schema), {"item_ids": ids}).fetchall()
            )
            skipped = {
                i: found.get(i)
                for i in sorted(set(ids))
                if found.get(i) not in ("pending", "processing")
            }

        def call(dry_run: bool) -> int:
            return q.cancel(
                ids,
                event_type=filt.event_type,
                plugin=filt.plugin,
                error_code=filt.error_code,
                created_before=created_before,
                dry_run=dry_run,
            )

        matched = call(dry_run=True)
        if matched == 0:
            return Cancelled(0, 0, skipped=skipped)
        if confirm is not None and not confirm(matched):
            return Cancelled(matched, 0, declined=True, skipped=skipped)
        return Cancelled(matched, call(dry_run=False), skipped=skipped)
