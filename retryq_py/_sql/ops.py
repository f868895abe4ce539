"""The SQL of operations (circuits, the metrics scrape, the admin commands,
the demo), next to the rows it returns.

Templates carry the `{schema}` slot that `compose` fills; the plain strings
run on a connection whose search_path finds the queue. The two rules still
written in Python sit at the end, marked, until they become SQL functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg import sql

from retryq_py._sql.params import integer_params, refuse_nul_params
from retryq_py._sql.statements import ENTRY_COLUMNS

if TYPE_CHECKING:
    from typing_extensions import LiteralString


# --- rows -------------------------------------------------------------------


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
class Pause:
    """One row of daz_retry_queue_pauses: event_type / plugin_name None means
    every one, plugin_name "" the items without a plugin (the key as `pause`
    and `resume` take it); held_count, the items it holds back now;
    age_seconds, how long it has lasted (the database's clock)."""

    event_type: str | None
    plugin_name: str | None
    paused_at: datetime
    paused_by: str
    reason: str | None
    held_count: int
    age_seconds: float


@dataclass(frozen=True)
class RateLimit:
    """One row of daz_retry_queue_rate_limits: at most `max_leases` leases of
    the key per `period_seconds`; `leases_in_period` were leased within the
    last period, `tokens_free` may still be; `next_token_at` is when the next
    lease becomes possible (None while one is)."""

    event_type: str
    plugin_name: str | None
    max_leases: int
    period_seconds: float
    leases_in_period: int
    tokens_free: int
    next_token_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class DeadLetterCount:
    """Items of one finished status (dead letters, or cancelled ones) per key."""

    event_type: str
    plugin_name: str | None
    count: int


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as `retryq dead-letter list` shows it."""

    id: int
    event_id: UUID
    event_type: str
    channel_name: str | None
    plugin_name: str | None
    retry_count: int
    max_retries: int
    last_error_code: str | None
    error_message: str | None
    correlation_id: str | None
    created_at: datetime
    dead_lettered_at: datetime | None
    # set for a dead letter cleanup moved to daz_retry_queue_archive
    archived_at: datetime | None = None


# --- installation -----------------------------------------------------------

IS_INSTALLED: LiteralString = (
    "SELECT to_regclass('daz_retry_queue') IS NOT NULL"
    " AND to_regproc('acquire_retry_items') IS NOT NULL"
)
SCHEMA_EXISTS: LiteralString = "SELECT to_regnamespace(%s) IS NOT NULL"
# Whether this session may write: a standby in recovery, or
# default_transaction_read_only on (the role's, the database's, PGOPTIONS),
# makes every transaction read-only (25006 at the first write).
READ_ONLY: LiteralString = (
    "SELECT pg_catalog.pg_is_in_recovery(),"
    " pg_catalog.current_setting('transaction_read_only') = 'on'"
)
# yoyo's own table, in the schema the connection's search_path names first:
# absent, nothing was ever applied there (and asking yoyo would create it).
HAS_YOYO: LiteralString = "SELECT to_regclass('_yoyo_migration') IS NOT NULL"
# Whether this role may read yoyo's tables (their owner, the installing role,
# may): yoyo lists only the tables a role has a privilege on, so without it
# sees none and takes its lock to create them (permission denied for
# yoyo_lock). Absent _yoyo_version: not asked for.
YOYO_READABLE: LiteralString = """
SELECT
    coalesce(has_table_privilege(to_regclass('_yoyo_migration'), 'SELECT'), TRUE)
    AND coalesce(has_table_privilege(to_regclass('_yoyo_version'), 'SELECT'), TRUE),
    current_user
"""
# What a rollback of the install would drop with the queue.
LIVE_ITEMS: LiteralString = (
    "SELECT count(*) FROM daz_retry_queue WHERE status IN ('pending', 'processing')"
)

# When a failed item is due again (for the worker's log line).
NEXT_RETRY: LiteralString = (
    "SELECT next_retry_at FROM daz_retry_queue WHERE id = %s AND status = 'pending'"
)


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def drop_schema(schema: str) -> sql.Composed:
    return sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))


# --- circuits ---------------------------------------------------------------

CIRCUITS: LiteralString = """
SELECT
    event_type, plugin_name, state, forced, consecutive_failures,
    failure_threshold, cooldown_seconds, max_cooldown_seconds, trips,
    open_until, probe_item_id, opened_at, closed_at, last_failure_at,
    times_opened, lease_expiries
FROM {schema}daz_retry_queue_circuits
ORDER BY event_type, plugin_name NULLS FIRST
"""

CIRCUIT_OPEN: LiteralString = """
SELECT {schema}retry_circuit_open(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_seconds => %(seconds)s
)
"""

CIRCUIT_CLOSE: LiteralString = """
SELECT {schema}retry_circuit_close(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s
)
"""

CIRCUIT_CONFIGURE: LiteralString = """
SELECT {schema}retry_circuit_configure(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_failure_threshold => %(failure_threshold)s,
    p_cooldown_seconds => %(cooldown_seconds)s,
    p_max_cooldown_seconds => %(max_cooldown_seconds)s,
    p_reset => %(reset)s
)
"""

# --- rate limits ------------------------------------------------------------

RATE_LIMITS: LiteralString = """
SELECT
    event_type, plugin_name, max_leases, period_seconds, leases_in_period,
    tokens_free, next_token_at, updated_at
FROM {schema}daz_retry_queue_rate_limits
ORDER BY event_type, plugin_name NULLS FIRST
"""

RATE_LIMIT_SET: LiteralString = """
SELECT {schema}retry_rate_limit_set(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_max_leases => %(max_leases)s,
    p_period_seconds => %(period_seconds)s
)
"""

RATE_LIMIT_CLEAR: LiteralString = """
SELECT {schema}retry_rate_limit_clear(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s
)
"""

# A scrape during a deploy may meet a schema before the rate limits (0002).
HAS_RATE_LIMITS: LiteralString = "SELECT to_regclass(%(view)s) IS NOT NULL"


def rate_limits_view(schema: str | None) -> str:
    """The rate limits view's name for to_regclass, quoted."""
    view = sql.Identifier("daz_retry_queue_rate_limits")
    if schema is None:
        return view.as_string(None)
    return sql.SQL("{}.{}").format(sql.Identifier(schema), view).as_string(None)


# The demo runs against any installed version, circuits or not.
HAS_CIRCUITS: LiteralString = "SELECT to_regproc('retry_circuit_configure') IS NOT NULL"

CIRCUITS_OPENED: LiteralString = """
SELECT event_type, plugin_name, times_opened FROM daz_retry_queue_circuits
WHERE times_opened > 0 ORDER BY event_type, plugin_name
"""

# --- pauses -----------------------------------------------------------------

# age_seconds by the database's clock, as the other ages are
PAUSES: LiteralString = """
SELECT
    event_type, plugin_name, paused_at, paused_by, reason, held_count,
    -- epochs, not times: an infinite paused_at fails timestamptz - timestamptz
    (extract(EPOCH FROM now()) - extract(EPOCH FROM paused_at))::float8 AS age_seconds
FROM {schema}daz_retry_queue_pauses
ORDER BY event_type NULLS FIRST, plugin_name NULLS FIRST
"""

# How many items the pauses hold back now, each once however many pauses
# cover it (the view's held_count counts it under each); the view's rule.
HELD_BACK: LiteralString = """
SELECT count(*)
FROM {schema}daz_retry_queue AS a
WHERE a.status IN ('pending', 'processing')
    AND (a.status = 'pending' OR a.locked_until <= now())
    AND EXISTS (
        SELECT 1 FROM {schema}daz_retry_queue_pauses AS z
        WHERE (z.event_type IS NULL OR z.event_type = a.event_type)
            AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
    )
"""

PAUSE: LiteralString = """
SELECT {schema}retry_queue_pause(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_reason => %(reason)s
)
"""

RESUME: LiteralString = """
SELECT {schema}retry_queue_resume(
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s
)
"""

# --- the metrics scrape -----------------------------------------------------

# One snapshot for every number of a scrape, so that they add up.
SCRAPE_SNAPSHOT: LiteralString = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
LOCAL_STATEMENT_TIMEOUT: LiteralString = "SELECT set_config('statement_timeout', %s, true)"

# Exact counts on the active partition (pruned to by the status filter).
ACTIVE_COUNTS: LiteralString = """
SELECT
    count(*) FILTER (WHERE q.status = 'pending') AS pending,
    count(*) FILTER (WHERE q.status = 'processing') AS processing,
    count(*) FILTER (
        WHERE q.status = 'processing' AND q.locked_until <= now()
    ) AS expired_leases
FROM {schema}daz_retry_queue AS q
WHERE q.status IN ('pending', 'processing')
"""

# The oldest due item nobody holds (retry_queue_due walks the priorities as
# acquire does, so it costs what one acquire costs).
OLDEST_DUE: LiteralString = "SELECT oldest_due_age_seconds FROM {schema}retry_queue_due()"

# Dead letters through the finished partition's partial index: the cost grows
# with the dead letters, not with the completed rows.
DEAD_LETTER_COUNTS: LiteralString = """
SELECT q.event_type, q.plugin_name, count(*) AS count
FROM {schema}daz_retry_queue AS q
WHERE q.status = 'dead_letter'
GROUP BY q.event_type, q.plugin_name
ORDER BY q.event_type, q.plugin_name
"""

# Cancelled items likewise, through their own partial index.
CANCELLED_COUNTS: LiteralString = """
SELECT q.event_type, q.plugin_name, count(*) AS count
FROM {schema}daz_retry_queue AS q
WHERE q.status = 'cancelled'
GROUP BY q.event_type, q.plugin_name
ORDER BY q.event_type, q.plugin_name
"""

# The statistics (from the last ANALYZE or VACUUM) and size now, in pages, of
# the finished partition's leaf of completed items; of the whole finished
# partition on an install before 0039_finished_leaves (leaf false).
FINISHED_STATS: LiteralString = """
SELECT
    c.reltuples::double precision,
    c.relpages,
    pg_relation_size(c.oid) / current_setting('block_size')::integer,
    c.relname = '_retryq_completed'
FROM pg_class AS c
WHERE c.oid = coalesce(to_regclass(%(completed)s), to_regclass(%(finished)s))
"""

FINISHED_SAMPLE: LiteralString = """
SELECT count(*) FROM {schema}daz_retry_queue AS q
WHERE q.status IN ('completed', 'dead_letter', 'cancelled')
    AND q.ctid < format('(%%s,0)', %(pages)s::integer)::tid
"""

COMPLETED_SAMPLE: LiteralString = """
SELECT count(*) FROM {schema}daz_retry_queue AS q
WHERE q.status = 'completed'
    AND q.ctid < format('(%%s,0)', %(pages)s::integer)::tid
"""


def _private(schema: str | None, name: str) -> str:
    table = sql.Identifier(name)
    if schema is None:
        return table.as_string(None)
    return sql.SQL("{}.{}").format(sql.Identifier(schema), table).as_string(None)


def finished_partition(schema: str | None) -> str:
    """The finished partition's name for to_regclass, quoted."""
    return _private(schema, "_retryq_finished")


def completed_leaf(schema: str | None) -> str:
    """The name of the finished partition's leaf of completed items (0039),
    for to_regclass, quoted."""
    return _private(schema, "_retryq_completed")


# --- dead letters -----------------------------------------------------------

# The server's clock, as dead_lettered_at was stamped with it.
AGO: LiteralString = "SELECT now() - %s::interval"

# list_dead_letter_items applies the filter requeue_dead_letter_items and
# purge_dead_letter_items apply; older_than is measured by the server's clock.
_FILTERED: LiteralString = """list_dead_letter_items(
    p_item_ids => %(item_ids)s, p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s, p_error_code => %(error_code)s,
    p_dead_before => now() - %(older_than)s::interval, p_limit => %(limit)s)"""

DEAD_LETTERS: LiteralString = (
    "SELECT id, event_id, event_type, channel_name, plugin_name, retry_count, max_retries,"
    " last_error_code, error_message, correlation_id, created_at, dead_lettered_at FROM "
    + _FILTERED
)

# The dead letters cleanup archived, by the same filter and order as
# list_dead_letter_items (retryq_admin reads the archive; nothing replays it).
ARCHIVED_DEAD_LETTERS: LiteralString = """
SELECT
    a.id, a.event_id, a.event_type, a.channel_name, a.plugin_name,
    a.retry_count, a.max_retries, a.last_error_code, a.error_message,
    a.correlation_id, a.created_at, a.dead_lettered_at, a.archived_at
FROM {schema}daz_retry_queue_archive AS a
WHERE a.status = 'dead_letter'
    AND (%(item_ids)s::bigint[] IS NULL OR a.id = ANY(%(item_ids)s::bigint[]))
    AND (%(event_type)s::text IS NULL OR a.event_type = %(event_type)s::text)
    AND (%(plugin_name)s::text IS NULL OR a.plugin_name = %(plugin_name)s::text)
    AND (%(error_code)s::text IS NULL OR a.last_error_code = %(error_code)s::text)
    AND (
        %(older_than)s::interval IS NULL
        OR a.dead_lettered_at < now() - %(older_than)s::interval
    )
ORDER BY a.dead_lettered_at DESC, a.id DESC
LIMIT %(limit)s
"""

DEAD_LETTER_IDS: LiteralString = "SELECT id FROM " + _FILTERED + " ORDER BY id"

# A requeue that says what became of each dead letter it chose or was given
# (requeue_dead_letter_items_report); the same filter as the listing.
REQUEUE_REPORT: LiteralString = """
SELECT r.item_id, r.outcome, r.held_by, r.item_status
FROM requeue_dead_letter_items_report(
    p_item_ids => %(item_ids)s, p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s, p_error_code => %(error_code)s,
    p_dead_before => now() - %(older_than)s::interval) AS r
"""


@dataclass(frozen=True)
class RequeueOutcome:
    """One row of requeue_dead_letter_items_report: `outcome` is requeued,
    dedupe_key_held, event_id_held (held_by: the item holding it), busy,
    not_dead_letter, filtered_out or not_found; `item_status` the item's
    status after the call (None: no such item)."""

    item_id: int
    outcome: str
    held_by: int | None
    item_status: str | None


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command acts on: every given field must match."""

    ids: tuple[int, ...] = ()
    event_type: str | None = None
    plugin: str | None = None
    error_code: str | None = None
    older_than: timedelta | None = None

    def is_empty(self) -> bool:
        return not self.ids and all(
            v is None for v in (self.event_type, self.plugin, self.error_code, self.older_than)
        )

    def params(self, limit: int | None = None) -> dict[str, Any]:
        """The parameters of DEAD_LETTERS and DEAD_LETTER_IDS (limit None:
        all); a NUL in a text filter is refused naming it (22021), an id or
        limit beyond a bigint too (22003)."""
        params = {
            "item_ids": list(self.ids) or None,
            "event_type": self.event_type,
            "plugin_name": self.plugin,
            "error_code": self.error_code,
            "older_than": self.older_than,
            "limit": limit,
        }
        refuse_nul_params(params)
        return dict(integer_params(params))


# The rule cleanup_retry_queue deletes by, counted without deleting.
CLEANUP_DUE: LiteralString = "SELECT due_count FROM cleanup_retry_queue_due(%s)"


# --- cancel -----------------------------------------------------------------

# An item cleanup moved to the archive (retryq_admin may read it); its newest
# copy should a reused id have been archived twice (see the archive's key).
ARCHIVED_ITEM: LiteralString = (
    """
SELECT"""
    + ENTRY_COLUMNS
    + """,
    archived_at
FROM {schema}daz_retry_queue_archive
WHERE id = %(item_id)s
ORDER BY archived_at DESC
LIMIT 1
"""
)

# When cleanup archived each given id (an id not archived is absent).
ARCHIVED_AT: LiteralString = """
SELECT a.id, max(a.archived_at)
FROM {schema}daz_retry_queue_archive AS a
WHERE a.id = ANY(%(item_ids)s::bigint[])
GROUP BY a.id
"""

# The status of each given id that is still in the queue (an id it no longer
# holds, never had or already cleaned up, is absent).
ITEM_STATUSES: LiteralString = """
SELECT q.id, q.status FROM {schema}daz_retry_queue AS q
WHERE q.id = ANY(%(item_ids)s::bigint[])
ORDER BY q.id
"""


@dataclass(frozen=True)
class CancelFilter:
    """Which pending or processing items `retryq cancel` acts on: every given
    field must match (older_than: created longer ago than that)."""

    ids: tuple[int, ...] = ()
    event_type: str | None = None
    plugin: str | None = None
    error_code: str | None = None
    older_than: timedelta | None = None

    def is_empty(self) -> bool:
        return not self.ids and all(
            v is None for v in (self.event_type, self.plugin, self.error_code, self.older_than)
        )
