"""Operations: circuit breaker control, pauses and the queue-level numbers
that `retryq metrics` exports.

Every function takes a psycopg connection (the caller owns the transaction)
and an optional install schema. The SQL and its rows are in retryq_py._sql.ops.

A scrape must stay cheap with millions of finished rows, so nothing here
counts the finished partition: pending and processing are counted exactly
(the small active partition), dead letters and cancelled items exactly
through their partial indexes, and completed items are the planner's estimate (pg_class.reltuples
scaled to the table's current size, as the planner does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from retryq_py._session import binary_reads
from retryq_py._session import require as require_session
from retryq_py._sql import compose, integer_params, refuse_nul_params
from retryq_py._sql import ops as _q
from retryq_py._sql.ops import Circuit, DeadLetterCount, Pause, RateLimit
from retryq_py._sql.timestamps import load_infinite_timestamps

Conn = psycopg.Connection[Any]

# The circuit states, as exported in the retryq_circuit_state gauge.
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class QueueMetrics:
    """What one scrape reads. `sizes` maps each status to its item count;
    `completed_is_estimate` says whether sizes["completed"] is an estimate
    (planner statistics, or a sample of a large never-analyzed table) or
    exact (a table without statistics small enough to count whole)."""

    sizes: dict[str, float]
    completed_is_estimate: bool
    oldest_due_age_seconds: float
    expired_leases: int
    dead_letters: list[DeadLetterCount]
    cancelled: list[DeadLetterCount]
    circuits: list[Circuit]
    pauses: list[Pause]
    rate_limits: list[RateLimit]


def _call(conn: Conn, query: Any, params: dict[str, Any]) -> Any:
    """One operator call; a NUL in a text argument is refused naming its
    field (22021) instead of psycopg's unnamed DataError, and an integer
    argument that is no whole number (TypeError) instead of 42883."""
    params = dict(integer_params(params))
    require_session(conn)
    cur = conn.cursor()
    load_infinite_timestamps(cur)
    try:
        return cur.execute(query, params, binary=binary_reads(cur))
    except psycopg.DataError:
        refuse_nul_params(params)
        raise


def _read(cur: psycopg.Cursor[Any], query: Any) -> list[Any]:
    """A view's rows, their times infinite ones included and read whatever
    the session's DateStyle (binary, see _session)."""
    require_session(cur.connection)
    load_infinite_timestamps(cur)
    return cur.execute(query, binary=binary_reads(cur)).fetchall()


# --- circuits ---------------------------------------------------------------


def list_circuits(conn: Conn, schema: str | None = None) -> list[Circuit]:
    """Every circuit, as daz_retry_queue_circuits shows it."""
    with conn.cursor(row_factory=class_row(Circuit)) as cur:
        return _read(cur, compose(_q.CIRCUITS, schema))


def open_circuit(
    conn: Conn,
    event_type: str,
    plugin_name: str | None = None,
    *,
    seconds: float | None = None,
    schema: str | None = None,
) -> None:
    """Open a circuit now: until `close_circuit` (seconds None), or for
    `seconds` after which it is probed like a tripped one."""
    _call(
        conn,
        compose(_q.CIRCUIT_OPEN, schema),
        {"event_type": event_type, "plugin_name": plugin_name, "seconds": seconds},
    )


def close_circuit(
    conn: Conn, event_type: str, plugin_name: str | None = None, *, schema: str | None = None
) -> bool:
    """Close a circuit now and forget its failure streak; False if the key
    has no circuit."""
    row = _call(
        conn,
        compose(_q.CIRCUIT_CLOSE, schema),
        {"event_type": event_type, "plugin_name": plugin_name},
    ).fetchone()
    return bool(row and row[0])


def configure_circuit(
    conn: Conn,
    event_type: str | None,
    plugin_name: str | None = None,
    *,
    failure_threshold: int | None = None,
    cooldown_seconds: float | None = None,
    max_cooldown_seconds: float | None = None,
    reset: bool = False,
    schema: str | None = None,
) -> None:
    """Set a key's threshold (0: never trips) and cool-downs; None keeps a
    setting, `reset` makes the key follow the defaults first. event_type None
    sets the defaults."""
    _call(
        conn,
        compose(_q.CIRCUIT_CONFIGURE, schema),
        {
            "event_type": event_type,
            "plugin_name": plugin_name,
            "failure_threshold": failure_threshold,
            "cooldown_seconds": cooldown_seconds,
            "max_cooldown_seconds": max_cooldown_seconds,
            "reset": reset,
        },
    )


# --- rate limits ------------------------------------------------------------


def list_rate_limits(conn: Conn, schema: str | None = None) -> list[RateLimit]:
    """Every rate limit, as daz_retry_queue_rate_limits shows it."""
    with conn.cursor(row_factory=class_row(RateLimit)) as cur:
        return _read(cur, compose(_q.RATE_LIMITS, schema))


def set_rate_limit(
    conn: Conn,
    event_type: str,
    plugin_name: str | None = None,
    *,
    max_leases: int,
    period_seconds: float = 1.0,
    schema: str | None = None,
) -> None:
    """At most `max_leases` leases of the key (plugin None: items without a
    plugin) per `period_seconds` across all workers, from now on. Raises
    psycopg.errors.InvalidParameterValue naming the field for a blank
    event_type, max_leases outside 1..100000 or a period outside
    0.001..31536000 s."""
    _call(
        conn,
        compose(_q.RATE_LIMIT_SET, schema),
        {
            "event_type": event_type,
            "plugin_name": plugin_name,
            "max_leases": max_leases,
            "period_seconds": period_seconds,
        },
    )


def clear_rate_limit(
    conn: Conn, event_type: str, plugin_name: str | None = None, *, schema: str | None = None
) -> bool:
    """Remove the key's rate limit; False if it had none."""
    row = _call(
        conn,
        compose(_q.RATE_LIMIT_CLEAR, schema),
        {"event_type": event_type, "plugin_name": plugin_name},
    ).fetchone()
    return bool(row and row[0])


def _has_rate_limits(conn: Conn, schema: str | None) -> bool:
    row = conn.execute(_q.HAS_RATE_LIMITS, {"view": _q.rate_limits_view(schema)}).fetchone()
    return bool(row and row[0])


# --- pauses -----------------------------------------------------------------


def list_pauses(conn: Conn, schema: str | None = None) -> list[Pause]:
    """Every pause, as daz_retry_queue_pauses shows it (the whole queue's first)."""
    with conn.cursor(row_factory=class_row(Pause)) as cur:
        return _read(cur, compose(_q.PAUSES, schema))


def pause(
    conn: Conn,
    event_type: str | None = None,
    plugin_name: str | None = None,
    *,
    reason: str | None = None,
    schema: str | None = None,
) -> bool:
    """Pause the items of an event type (plugin_name None: of every plugin;
    "": only its items without a plugin), of a plugin (event_type None), or
    of the whole queue (both None): acquire leases none of them until
    `resume` with the same key; they keep their retry budget. True when newly
    paused, False when it already was (a reason then replaces the old one).
    psycopg.errors.InvalidParameterValue (22023) for a blank event_type, a
    plugin_name or a reason over 1000 characters."""
    row = _call(
        conn,
        compose(_q.PAUSE, schema),
        {"event_type": event_type, "plugin_name": plugin_name, "reason": reason},
    ).fetchone()
    return bool(row and row[0])


def resume(
    conn: Conn,
    event_type: str | None = None,
    plugin_name: str | None = None,
    *,
    schema: str | None = None,
) -> bool:
    """End the pause of exactly this key and wake the workers; False when it
    was not paused."""
    row = _call(
        conn, compose(_q.RESUME, schema), {"event_type": event_type, "plugin_name": plugin_name}
    ).fetchone()
    return bool(row and row[0])


# --- metrics ----------------------------------------------------------------

# A leaf of completed items without statistics (never analyzed, or analyzed
# while empty) is sampled: its first SAMPLE_PAGES pages are counted by a TID range
# scan (8 MB at most, whatever the table's size) and the density scaled to
# the table's pages. Smaller tables are thus counted exactly.
SAMPLE_PAGES = 1000


def _completed_rows(conn: Conn, schema: str | None, others: float) -> tuple[float, bool]:
    """Completed items and whether that is an estimate: the planner's
    (reltuples per page at the last ANALYZE times the pages now) for the
    finished partition's leaf of completed items, else a sample of its first
    pages; exact when the sample is the table. On an install before 0039 the
    same for the whole finished partition, less `others` (its dead letters
    and cancelled items, counted exactly)."""
    stats = conn.execute(
        _q.FINISHED_STATS,
        {"completed": _q.completed_leaf(schema), "finished": _q.finished_partition(schema)},
    ).fetchone()
    if stats is None:
        return 0.0, False
    reltuples, relpages, pages = float(stats[0]), int(stats[1]), int(stats[2])
    minus = 0.0 if stats[3] else others
    if reltuples >= 0 and relpages > 0:
        return max(float(round(reltuples / relpages * pages)) - minus, 0.0), True
    sample = _q.COMPLETED_SAMPLE if stats[3] else _q.FINISHED_SAMPLE
    row = conn.execute(compose(sample, schema), {"pages": SAMPLE_PAGES}).fetchone()
    sampled = float(row[0]) if row else 0.0
    if pages <= SAMPLE_PAGES:
        return max(sampled - minus, 0.0), False
    return max(sampled * pages / SAMPLE_PAGES - minus, 0.0), True


def collect_queue_metrics(conn: Conn, schema: str | None = None) -> QueueMetrics:
    """Read everything a scrape exports, without counting finished rows."""
    active = conn.execute(compose(_q.ACTIVE_COUNTS, schema)).fetchone()
    assert active is not None
    pending, processing, expired = (int(v) for v in active)
    oldest = conn.execute(compose(_q.OLDEST_DUE, schema)).fetchone()
    with conn.cursor(row_factory=class_row(DeadLetterCount)) as cur:
        dead = _read(cur, compose(_q.DEAD_LETTER_COUNTS, schema))
        cancelled = _read(cur, compose(_q.CANCELLED_COUNTS, schema))
    dead_total = sum(d.count for d in dead)
    cancelled_total = sum(c.count for c in cancelled)
    completed, is_estimate = _completed_rows(conn, schema, dead_total + cancelled_total)
    return QueueMetrics(
        sizes={
            "pending": float(pending),
            "processing": float(processing),
            "completed": completed,
            "dead_letter": float(dead_total),
            "cancelled": float(cancelled_total),
        },
        completed_is_estimate=is_estimate,
        oldest_due_age_seconds=max(float(oldest[0]), 0.0) if oldest else 0.0,
        expired_leases=expired,
        dead_letters=dead,
        cancelled=cancelled,
        circuits=list_circuits(conn, schema),
        pauses=list_pauses(conn, schema),
        rate_limits=(list_rate_limits(conn, schema) if _has_rate_limits(conn, schema) else []),
    )
