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
    `completed_is_estimate` says whether sizes["completed"] came from the
    planner's statistics (True) or from a bounded count (False: the table was
    never analyzed and holds fewer than BOUNDED_COUNT_LIMIT finished rows)."""

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

# Above this many finished rows a never-analyzed table is not counted: the
# bounded count stops here and the estimate takes over after autovacuum's
# first ANALYZE.
BOUNDED_COUNT_LIMIT = 100_000

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

# The planner's row estimate for the finished partition: reltuples per page at
# the last ANALYZE/VACUUM times the pages the table has now. NULL when it was
# never analyzed (reltuples -1).
_FINISHED_ESTIMATE: LiteralString = """
SELECT CASE
    WHEN c.reltuples < 0 THEN NULL
    WHEN c.relpages = 0 THEN c.reltuples::double precision
    ELSE c.reltuples / c.relpages * (
        pg_relation_size(c.oid) / current_setting('block_size')::integer
    )
END
FROM pg_class AS c
WHERE c.oid = to_regclass(%(finished)s)
"""

_FINISHED_BOUNDED: LiteralString = """
SELECT count(*) FROM (
    SELECT 1 FROM {schema}daz_retry_queue AS q
    WHERE q.status IN ('completed', 'dead_letter')
    LIMIT %(limit)s
) AS f
"""


def _finished_name(schema: str | None) -> str:
    table = sql.Identifier("_retryq_finished")
    if schema is None:
        return table.as_string(None)
    return sql.SQL("{}.{}").format(sql.Identifier(schema), table).as_string(None)


def collect_queue_metrics(conn: Conn, schema: str | None = None) -> QueueMetrics:
    """Read everything a scrape exports, without counting finished rows."""
    active = conn.execute(compose(_ACTIVE, schema)).fetchone()
    assert active is not None
    pending, processing, expired = (int(v) for v in active)
    oldest = conn.execute(compose(_OLDEST_DUE, schema)).fetchone()
    with conn.cursor(row_factory=class_row(DeadLetterCount)) as cur:
        dead = cur.execute(compose(_DEAD, schema)).fetchall()
    dead_total = sum(d.count for d in dead)
    est = conn.execute(_FINISHED_ESTIMATE, {"finished": _finished_name(schema)}).fetchone()
    finished: float | None = None if est is None or est[0] is None else float(est[0])
    is_estimate = finished is not None
    if finished is None:
        row = conn.execute(
            compose(_FINISHED_BOUNDED, schema), {"limit": BOUNDED_COUNT_LIMIT}
        ).fetchone()
        finished = float(row[0]) if row else 0.0
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
