"""Operations: circuit breaker control and the queue-level numbers that
`retryq metrics` exports.

Every function takes a psycopg connection (the caller owns the transaction)
and an optional install schema. The SQL lives here, next to the rows it
returns, because only operations use it.

A scrape must stay cheap with millions of finished rows, so nothing here
counts the finished partition: pending and processing are counted exactly
(the small active partition), dead letters exactly through their partial
index, and completed items are the planner's estimate (pg_class.reltuples
scaled to the table's current size, as the planner does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from retryq_py._sql import compose

if TYPE_CHECKING:
    from typing_extensions import LiteralString

Conn = psycopg.Connection[Any]

# The circuit states, as exported in the retryq_circuit_state gauge.
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class Circuit:
    """One row of daz_retry_queue_circuits."""

    event_type: str
    plugin_name: str | None
    state: str
    forced: bool
    consecutive_failures: int
    failure_threshold: int
    cooldown_seconds: float
    max_cooldown_seconds: float
    trips: int
    open_until: datetime | None
    probe_item_id: int | None
    opened_at: datetime | None
    closed_at: datetime | None
    last_failure_at: datetime | None
    times_opened: int
    lease_expiries: int


@dataclass(frozen=True)
class DeadLetterCount:
    event_type: str
    plugin_name: str | None
    count: int


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
    circuits: list[Circuit]


# --- circuits ---------------------------------------------------------------

_CIRCUITS: LiteralString = """
SELECT
    event_type, plugin_name, state, forced, consecutive_failures,
    failure_threshold, cooldown_seconds, max_cooldown_seconds, trips,
    open_until, probe_item_id, opened_at, closed_at, last_failure_at,
    times_opened, lease_expiries
FROM {schema}daz_retry_queue_circuits
ORDER BY event_type, plugin_name NULLS FIRST
"""

_OPEN: LiteralString = """
SELECT {schema}retry_circuit_open(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_seconds => %(seconds)s
)
"""

_CLOSE: LiteralString = """
SELECT {schema}retry_circuit_close(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s
)
"""

_CONFIGURE: LiteralString = """
SELECT {schema}retry_circuit_configure(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_failure_threshold => %(failure_threshold)s,
    p_cooldown_seconds => %(cooldown_seconds)s,
    p_max_cooldown_seconds => %(max_cooldown_seconds)s,
    p_reset => %(reset)s
)
"""


def list_circuits(conn: Conn, schema: str | None = None) -> list[Circuit]:
    """Every circuit, as daz_retry_queue_circuits shows it."""
    with conn.cursor(row_factory=class_row(Circuit)) as cur:
        return cur.execute(compose(_CIRCUITS, schema)).fetchall()


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
    conn.execute(
        compose(_OPEN, schema),
        {"event_type": event_type, "plugin_name": plugin_name, "seconds": seconds},
    )


def close_circuit(
    conn: Conn, event_type: str, plugin_name: str | None = None, *, schema: str | None = None
) -> bool:
    """Close a circuit now and forget its failure streak; False if the key
    has no circuit."""
    row = conn.execute(
        compose(_CLOSE, schema), {"event_type": event_type, "plugin_name": plugin_name}
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
    conn.execute(
        compose(_CONFIGURE, schema),
        {
            "event_type": event_type,
            "plugin_name": plugin_name,
            "failure_threshold": failure_threshold,
            "cooldown_seconds": cooldown_seconds,
            "max_cooldown_seconds": max_cooldown_seconds,
            "reset": reset,
        },
    )


# --- metrics ----------------------------------------------------------------

# A finished partition without statistics (never analyzed, or analyzed while
# empty) is sampled: its first SAMPLE_PAGES pages are counted by a TID range
# scan (8 MB at most, whatever the table's size) and the density scaled to
# the table's pages. Smaller tables are thus counted exactly.
SAMPLE_PAGES = 1000

# Exact counts on the active partition (pruned to by the status filter).
_ACTIVE: LiteralString = """
SELECT
    count(*) FILTER (WHERE q.status = 'pending') AS pending,
    count(*) FILTER (WHERE q.status = 'processing') AS processing,
    count(*) FILTER (
        WHERE q.status = 'processing' AND q.locked_until <= now()
    ) AS expired_leases
FROM {schema}daz_retry_queue AS q
WHERE q.status IN ('pending', 'processing')
"""

# The oldest due item nobody holds: one short index scan per priority, the
# same walk acquire makes, so it costs what one acquire costs.
_OLDEST_DUE: LiteralString = """
SELECT coalesce(
    extract(epoch FROM now() - min(n.next_retry_at))::double precision, 0
)
FROM generate_series(1, 10) AS p (priority)
CROSS JOIN LATERAL (
    SELECT q.next_retry_at
    FROM {schema}daz_retry_queue AS q
    WHERE q.status IN ('pending', 'processing')
        AND q.priority = p.priority
        AND q.next_retry_at <= now()
        AND (q.locked_until IS NULL OR q.locked_until <= now())
    ORDER BY q.next_retry_at
    LIMIT 1
) AS n
"""

# Dead letters through the finished partition's partial index: the cost grows
# with the dead letters, not with the completed rows.
_DEAD: LiteralString = """
SELECT q.event_type, q.plugin_name, count(*) AS count
FROM {schema}daz_retry_queue AS q
WHERE q.status = 'dead_letter'
GROUP BY q.event_type, q.plugin_name
ORDER BY q.event_type, q.plugin_name
"""

# The finished partition's statistics (from the last ANALYZE or VACUUM) and
# its size now, in pages.
_FINISHED_STATS: LiteralString = """
SELECT
    c.reltuples::double precision,
    c.relpages,
    pg_relation_size(c.oid) / current_setting('block_size')::integer
FROM pg_class AS c
WHERE c.oid = to_regclass(%(finished)s)
"""

_FINISHED_SAMPLE: LiteralString = """
SELECT count(*) FROM {schema}daz_retry_queue AS q
WHERE q.status IN ('completed', 'dead_letter')
    AND q.ctid < format('(%%s,0)', %(pages)s::integer)::tid
"""


def _finished_name(schema: str | None) -> str:
    table = sql.Identifier("_retryq_finished")
    if schema is None:
        return table.as_string(None)
    return sql.SQL("{}.{}").format(sql.Identifier(schema), table).as_string(None)


def _finished_rows(conn: Conn, schema: str | None) -> tuple[float, bool]:
    """Rows in the finished partition and whether that is an estimate: the
    planner's (reltuples per page at the last ANALYZE times the pages now),
    else a sample of the first pages; exact when the sample is the table."""
    stats = conn.execute(_FINISHED_STATS, {"finished": _finished_name(schema)}).fetchone()
    if stats is None:
        return 0.0, False
    reltuples, relpages, pages = float(stats[0]), int(stats[1]), int(stats[2])
    if reltuples >= 0 and relpages > 0:
        return float(round(reltuples / relpages * pages)), True
    row = conn.execute(compose(_FINISHED_SAMPLE, schema), {"pages": SAMPLE_PAGES}).fetchone()
    sampled = float(row[0]) if row else 0.0
    if pages <= SAMPLE_PAGES:
        return sampled, False
    return sampled * pages / SAMPLE_PAGES, True


def collect_queue_metrics(conn: Conn, schema: str | None = None) -> QueueMetrics:
    """Read everything a scrape exports, without counting finished rows."""
    active = conn.execute(compose(_ACTIVE, schema)).fetchone()
    assert active is not None
    pending, processing, expired = (int(v) for v in active)
    oldest = conn.execute(compose(_OLDEST_DUE, schema)).fetchone()
    with conn.cursor(row_factory=class_row(DeadLetterCount)) as cur:
        dead = cur.execute(compose(_DEAD, schema)).fetchall()
    dead_total = sum(d.count for d in dead)
    finished, is_estimate = _finished_rows(conn, schema)
    return QueueMetrics(
        sizes={
            "pending": float(pending),
            "processing": float(processing),
            "completed": max(finished - dead_total, 0.0),
            "dead_letter": float(dead_total),
        },
        completed_is_estimate=is_estimate,
        oldest_due_age_seconds=max(float(oldest[0]), 0.0) if oldest else 0.0,
        expired_leases=expired,
        dead_letters=dead,
        circuits=list_circuits(conn, schema),
    )
