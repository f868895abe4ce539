"""`retryq dead-letter`: list, show, requeue and purge dead letters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from retryq_py._sql import QueueEntry, compose
from retryq_py._sql import ops as _q
from retryq_py._sql.ops import DeadLetter, DeadLetterFilter, RequeueOutcome
from retryq_py.admin.target import CommandError, Declined, Target, UsageProblem, connect, queue

__all__ = [
    "DeadLetter",
    "DeadLetterFilter",
    "ErrorEntry",
    "RequeueOutcome",
    "Requeued",
    "dead_letter_list",
    "dead_letter_match",
    "dead_letter_purge",
    "dead_letter_requeue",
    "dead_letter_requeue_report",
    "error_entries",
    "item_show",
]


def dead_letter_list(
    t: Target, filt: DeadLetterFilter, limit: int = 50, *, archived: bool = False
) -> list[DeadLetter]:
    """Dead letters matching the filter, most recent first. archived: those
    cleanup moved to daz_retry_queue_archive instead (archived_at set), which
    requeue and purge no longer reach; psycopg's InsufficientPrivilege for a
    role that may not read the archive."""
    if limit < 1:
        raise UsageProblem("invalid --limit: must be at least 1")
    with connect(t) as conn, conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        if archived:
            query = compose(_q.ARCHIVED_DEAD_LETTERS, t.schema)
            return cur.execute(query, filt.params(limit)).fetchall()
        return cur.execute(_q.DEAD_LETTERS, filt.params(limit)).fetchall()


@dataclass(frozen=True)
class ErrorEntry:
    """One failed attempt from an item's error_history."""

    attempt: int | None
    failed_at: str | None
    worker_id: str | None
    code: str | None
    retryable: bool | None
    error: str | None


def error_entries(item: QueueEntry) -> list[ErrorEntry]:
    return [
        ErrorEntry(
            attempt=e.get("attempt"),
            failed_at=e.get("failed_at"),
            worker_id=e.get("worker_id"),
            code=e.get("code"),
            retryable=e.get("retryable"),
            error=e.get("error"),
        )
        for e in item.error_history
        if isinstance(e, dict)
    ]


def item_show(t: Target, item_id: int) -> QueueEntry:
    """One item (any status) with its error history: from the queue, else
    from daz_retry_queue_archive where cleanup moved it (archived_at set).
    CommandError when neither has it, or when the archive is not readable
    as this role (retryq_admin may read it)."""
    with connect(t) as conn:
        item = queue(conn, t).get(item_id)
        if item is not None:
            return item
        try:
            with conn.cursor(row_factory=class_row(QueueEntry)) as cur:
                item = cur.execute(
                    compose(_q.ARCHIVED_ITEM, t.schema), {"item_id": item_id}
                ).fetchone()
        except psycopg.errors.InsufficientPrivilege as exc:
            raise CommandError(
                f"no item with id {item_id} in the queue, and this role may not read "
                "daz_retry_queue_archive, where cleanup moves dead letters and cancelled "
                "items (grant it retryq_admin)"
            ) from exc
    if item is None:
        raise CommandError(f"no item with id {item_id}")
    return item


def _require_filter(filt: DeadLetterFilter, verb: str) -> None:
    if filt.is_empty():
        raise UsageProblem(
            f"{verb} needs a filter: --id, --event-type, --plugin, --error-code or "
            "--older-than (--older-than 0s selects every dead letter)"
        )


def dead_letter_requeue(t: Target, filt: DeadLetterFilter) -> int:
    """Requeue matching dead letters (one SQL call, so one transaction); the count."""
    _require_filter(filt, "requeue")
    with connect(t) as conn:
        dead_before: datetime | None = None
        if filt.older_than is not None:
            row = conn.execute(_q.AGO, (filt.older_than,)).fetchone()
            dead_before = row[0] if row else None
        return queue(conn, t).requeue_dead_letters(
            list(filt.ids) or None,
            event_type=filt.event_type,
            plugin=filt.plugin,
            error_code=filt.error_code,
            dead_before=dead_before,
        )


@dataclass(frozen=True)
class Requeued:
    """What a requeue did: `outcomes`, one per dead letter the filter chose
    and per id given, in id order (see requeue_dead_letter_items_report)."""

    outcomes: list[RequeueOutcome]
    # not_found ids that cleanup archived: their archived_at
    archived: dict[int, datetime] = field(default_factory=dict)

    @property
    def requeued(self) -> int:
        return sum(1 for o in self.outcomes if o.outcome == "requeued")

    @property
    def skipped(self) -> list[RequeueOutcome]:
        return [o for o in self.outcomes if o.outcome != "requeued"]

    def why(self, skip: RequeueOutcome) -> str:
        """Why one was not requeued, as a person reads it."""
        if skip.outcome in ("dedupe_key_held", "event_id_held"):
            what = "dedupe key" if skip.outcome == "dedupe_key_held" else "event id"
            now = any(o.item_id == skip.held_by and o.outcome == "requeued" for o in self.outcomes)
            holder = f"item {skip.held_by}, requeued now" if now else f"live item {skip.held_by}"
            return f"left a dead letter: its {what} is held by {holder}"
        if skip.outcome == "not_found" and skip.item_id in self.archived:
            return (
                "archived by cleanup at"
                f" {self.archived[skip.item_id].isoformat(sep=' ', timespec='seconds')}:"
                " requeue cannot reach it; enqueue its event type and data again"
            )
        return {
            "busy": "left a dead letter: another transaction holds it (run again)",
            "not_dead_letter": f"not a dead letter ({skip.item_status})",
            "filtered_out": "a dead letter the other filters exclude",
            "not_found": "no such item",
        }.get(skip.outcome, skip.outcome)


def dead_letter_requeue_report(t: Target, filt: DeadLetterFilter) -> Requeued:
    """Requeue matching dead letters (one SQL call, so one transaction) and
    say what became of each chosen dead letter and each given id."""
    _require_filter(filt, "requeue")
    with connect(t) as conn:
        with conn.cursor(row_factory=class_row(RequeueOutcome)) as cur:
            outcomes = cur.execute(_q.REQUEUE_REPORT, filt.params()).fetchall()
        missing = [o.item_id for o in outcomes if o.outcome == "not_found"]
        archived: dict[int, datetime] = {}
        if missing:
            try:
                query = compose(_q.ARCHIVED_AT, t.schema)
                archived = dict(conn.execute(query, {"item_ids": missing}).fetchall())
            except psycopg.errors.InsufficientPrivilege:
                pass  # a role that may not read the archive: "no such item"
    return Requeued(outcomes, archived)


def dead_letter_match(t: Target, filt: DeadLetterFilter) -> list[int]:
    """Ids of the dead letters a filter selects (what purge would delete)."""
    with connect(t) as conn:
        return [int(r[0]) for r in conn.execute(_q.DEAD_LETTER_IDS, filt.params()).fetchall()]


def dead_letter_purge(
    t: Target, filt: DeadLetterFilter, confirm: Callable[[int], bool] | None = None
) -> int:
    """Delete matching dead letters; returns the count deleted (0 when none
    matches). confirm(count) is asked first and may veto: Declined."""
    _require_filter(filt, "purge")
    ids = dead_letter_match(t, filt)
    if not ids:
        return 0
    if confirm is not None and not confirm(len(ids)):
        raise Declined(f"declined: nothing purged ({len(ids)} dead letter(s) left as they were)")
    # purge_dead_letter_items keeps its own status test, so an item requeued
    # since dead_letter_match picked it is left alone.
    with connect(t) as conn:
        return queue(conn, t).purge_dead_letters(ids)
