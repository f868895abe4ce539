"""The consoles, time formatting and tables every command (and the demo)
prints with; nothing here talks to the database."""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from retryq_py import admin

# the rows' types only: their modules load psycopg (and the worker's), which
# a command loads when it reads them, and `--help` never does
if TYPE_CHECKING:
    from retryq_py._sql import QueueEntry
    from retryq_py._sql.ops import Circuit, DeadLetter, Pause, RateLimit
    from retryq_py.admin.items import Stats
    from retryq_py.admin.migrations import MigrationRow
    from retryq_py.worker import WorkerCounts

# What a terminal would act on instead of showing: C0 and C1 controls (ESC
# starts an escape sequence that can retitle the window, clear the screen or
# move the cursor), DEL, the line and paragraph separators, and the bidi
# controls that reorder what follows (U+202E shows "exe.txt" as "txt.exe").
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def visible(text: str, keep: str = "") -> str:
    """text with every character a terminal would act on written as its
    escape (\\x1b, \\n, \\u202e), but those in `keep` (a tab in a log line,
    the newline of a console's own lines), so a value from the queue (an event
    type, an error text a handler raised) shows as it is and stays on its line."""
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)


class _Console(Console):
    """A Console that shows text as it is: no markup (an event type "[/]"
    was read as a closing tag and failed the command), no :emoji: codes, and
    every control but the newline escaped in whatever it prints (the tables
    escape newlines in their cells as well, see visible)."""

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(visible(text, keep="\n"), **options)


# Output wraps only on a terminal. Piped, a line of text stays one line
# (soft_wrap) and a table gets wide rows instead of rich's 80-column default,
# so what grep or a log collector reads is what was printed.
def _console(stream: TextIO, **options: Any) -> Console:
    terminal = stream.isatty()
    return _Console(
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=not terminal,
        width=None if terminal or os.environ.get("COLUMNS") else 160,
        **options,
    )


out = _console(sys.stdout)
err = _console(sys.stderr, stderr=True)


def when(value: datetime | str | None) -> str:
    """Local time to the second; a string that is not ISO 8601 is shown as is."""
    return admin.moment_text(value)


def short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    one = visible(" ".join(text.split()))
    return one if len(one) <= width else one[: width - 1] + "…"


def _row(table: Table, *cells: str) -> None:
    """A table row whose cells are shown as they are (see visible): a value
    from the queue stays in its cell, on its row."""
    table.add_row(*(visible(c) for c in cells))


def migrations_table(rows: list[MigrationRow]) -> Table:
    table = Table("migration", "applied")
    for row in rows:
        _row(table, row.id, "yes" if row.applied else "no")
    return table


def worker_counts_line(counts: WorkerCounts) -> str:
    return (
        f"completed {counts.processed}, retried {counts.failed}, "
        f"dead-lettered {counts.dead_lettered}, released {counts.released}, "
        f"lease lost {counts.lease_lost}, snoozed {counts.snoozed}"
    )


def stats_table(s: Stats, title: str = "daz_retry_queue_stats") -> Table:
    table = Table(
        "status",
        "event_type",
        "plugin",
        "items",
        "avg retries",
        "max retries",
        "oldest",
        "leased",
        "paused",
        title=title,
    )
    for r in s.rows:
        _row(
            table,
            r.status,
            r.event_type,
            r.plugin_name or "",
            str(r.item_count),
            f"{r.avg_retry_count:.2f}",
            str(r.max_retry_count),
            when(r.oldest_created_at),
            str(r.leased_count),
            "paused" if r.paused else "",
        )
    return table


def totals_line(s: Stats) -> str:
    parts = [f"{k} {v}" for k, v in s.totals.items()]
    return f"total {s.total}: " + ", ".join(parts)


def dead_letters_table(rows: list[DeadLetter], title: str = "dead letters") -> Table:
    table = Table(
        "id",
        "event_type",
        "plugin",
        "correlation_id",
        "retries",
        "code",
        "last error",
        "dead since",
        title=title,
    )
    archived = any(r.archived_at is not None for r in rows)
    if archived:
        table.add_column("archived")
    for r in rows:
        cells = [
            str(r.id),
            r.event_type,
            r.plugin_name or "",
            r.correlation_id or "",
            f"{r.retry_count}/{r.max_retries}",
            r.last_error_code or "",
            short(r.error_message),
            when(r.dead_lettered_at),
        ]
        if archived:
            cells.append(when(r.archived_at))
        _row(table, *cells)
    return table


def item_grid(item: QueueEntry) -> Table:
    """One item's fields, a label and a value per line."""
    from retryq_py._sql.decode import json_text  # psycopg: loaded by the command only

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for label, value in (
        ("id", str(item.id)),
        ("event_id", str(item.event_id)),
        ("event_type", item.event_type),
        # cleanup moved it out of the queue: requeue no longer finds it
        ("status", item.status if item.archived_at is None else f"{item.status} (archived)"),
        ("channel", item.channel_name or ""),
        ("plugin", item.plugin_name or ""),
        ("retries", f"{item.retry_count}/{item.max_retries}"),
        ("priority", str(item.priority)),
        ("correlation_id", item.correlation_id or ""),
        ("dedupe_key", item.dedupe_key or ""),
        ("tags", ", ".join(item.tags)),
        ("created", when(item.created_at)),
        ("next attempt", when(item.next_retry_at) if item.status == "pending" else ""),
        # a cancelled item's completed_at is when it was cancelled
        ("cancelled" if item.status == "cancelled" else "completed", when(item.completed_at)),
        ("dead since", when(item.dead_lettered_at)),
        ("archived", when(item.archived_at)),
        ("last error", f"[{item.last_error_code or ''}] {item.error_message or ''}".strip()),
        # a value Python could not decode (RawJson): the server's text
        ("data", json_text(item.event_data, sort_keys=True)),
        ("metadata", json_text(item.event_metadata, sort_keys=True)),
    ):
        _row(info, label, value)
    return info


def error_history_table(item: QueueEntry) -> Table:
    table = Table(
        "attempt", "failed at", "worker", "code", "retryable", "error", title="error history"
    )
    for e in admin.error_entries(item):
        _row(
            table,
            "" if e.attempt is None else str(e.attempt),
            when(e.failed_at),
            e.worker_id or "",
            e.code or "",
            "" if e.retryable is None else ("yes" if e.retryable else "no"),
            e.error or "",
        )
    return table


def rate_limits_table(rows: list[RateLimit]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("event_type", "plugin", "limit", "in_period", "free", "next_token_at"):
        table.add_column(col)
    for r in rows:
        _row(
            table,
            r.event_type,
            r.plugin_name or "",
            f"{r.max_leases}/{r.period_seconds:g}s",
            str(r.leases_in_period),
            str(r.tokens_free),
            when(r.next_token_at),
        )
    return table


def circuits_table(rows: list[Circuit]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in (
        "event_type",
        "plugin",
        "state",
        "failures",
        "threshold",
        "cooldown",
        "open_until",
        "probe",
        "opened",
        "lease_expiries",
    ):
        table.add_column(col)
    for c in rows:
        _row(
            table,
            c.event_type,
            c.plugin_name or "",
            c.state + (" (forced)" if c.forced else ""),
            str(c.consecutive_failures),
            "off" if c.failure_threshold == 0 else str(c.failure_threshold),
            f"{c.cooldown_seconds:g}s..{c.max_cooldown_seconds:g}s",
            when(c.open_until),
            "" if c.probe_item_id is None else str(c.probe_item_id),
            str(c.times_opened),
            str(c.lease_expiries),
        )
    return table


def pauses_table(rows: list[Pause]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("event_type", "plugin", "paused_at", "paused_by", "held", "reason"):
        table.add_column(col)
    for z in rows:
        _row(
            table,
            "(every)" if z.event_type is None else z.event_type,
            "(every)" if z.plugin_name is None else z.plugin_name or "(none)",
            when(z.paused_at),
            z.paused_by,
            str(z.held_count),
            short(z.reason or ""),
        )
    return table
