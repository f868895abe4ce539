-- The parent is what clients see. Rows live in one of two partitions: active
-- (pending, processing) and finished (completed, dead_letter, cancelled).
-- completed_at is the time an item finished by completion or by cancellation
-- (cancel_retry_items), so that cleanup ages both alike. Rows never move
-- between partitions by UPDATE: a cross-partition UPDATE makes a concurrent
-- SELECT ... FOR UPDATE SKIP LOCKED fail with "tuple to be locked was already
-- moved to another partition". The functions DELETE from one and INSERT into the
-- other instead, which a concurrent locker simply skips.
CREATE SEQUENCE daz_retry_queue_id_seq AS bigint;

CREATE TABLE daz_retry_queue (
    id bigint NOT NULL DEFAULT nextval('daz_retry_queue_id_seq'),
    event_id uuid NOT NULL DEFAULT gen_random_uuid(),
    event_type text NOT NULL,
    channel_name text,
    plugin_name text,
    event_data jsonb NOT NULL,
    event_metadata jsonb NOT NULL DEFAULT '{}',
    retry_count integer NOT NULL DEFAULT 0,
    max_retries integer NOT NULL DEFAULT 3,
    retry_delay_seconds double precision NOT NULL DEFAULT 60,
    backoff_multiplier double precision NOT NULL DEFAULT 2.0,
    max_retry_delay_seconds double precision NOT NULL DEFAULT 86400,
    retry_jitter double precision NOT NULL DEFAULT 0,
    priority integer NOT NULL DEFAULT 5,
    correlation_id text,
    tags text[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending',
    error_message text,
    last_error_code text,
    error_history jsonb NOT NULL DEFAULT '[]',
    -- the statement's time, not the transaction's: an item enqueued an hour
    -- into a transaction is not an hour overdue (see _retryq_insert_clock)
    created_at timestamptz NOT NULL DEFAULT statement_timestamp(),
    next_retry_at timestamptz NOT NULL DEFAULT statement_timestamp(),
    last_attempted_at timestamptz,
    completed_at timestamptz,
    dead_lettered_at timestamptz,
    locked_by text,
    locked_until timestamptz
) PARTITION BY LIST (status);

ALTER SEQUENCE daz_retry_queue_id_seq OWNED BY daz_retry_queue.id;

COMMENT ON TABLE daz_retry_queue IS
'retryq: failed operations waiting to be retried. Insert freely; '
'change state only through the retryq functions.';

-- The hot partition. Only (priority, next_retry_at, id) and, for routed
-- workers, (event_type, priority, next_retry_at, id) are indexed besides the
-- key, and acquire leaves those columns alone (a lease writes status,
-- locked_by, locked_until, last_attempted_at: none may ever be indexed, not
-- even in an index's predicate), so taking a lease is a HOT update
-- that writes no index entry, as long as the row's page has room for its new
-- version. Half of each page is left free: room for every row on it to take a
-- lease before the page must be pruned. At 70, a third of the leases in a
-- drain found no room, and each wrote a new row elsewhere and two index
-- entries.
-- The table's rules are its constraints, not the parent's: PostgreSQL prepares
-- every CHECK constraint anew in each statement that writes a row, which cost
-- the per-item completion's move into the finished partition a seventh of its
-- time. The finished partition has no CHECK at all (see
-- tables/_retryq_finished.sql).
CREATE TABLE _retryq_active PARTITION OF daz_retry_queue (
    CONSTRAINT daz_retry_queue_status_check CHECK (
        status IN (
            'pending', 'processing', 'completed', 'dead_letter', 'cancelled'
        )
    ),
    -- not blank: _retryq_blank's rule, spelled out (see there)
    CONSTRAINT daz_retry_queue_event_type_check CHECK (
        length(event_type) <= 200 AND (
            ascii(event_type) BETWEEN 33 AND 126
            OR event_type ~ '[^[:space:]\u0085\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]'  -- noqa: LT05
        )
    ),
    CONSTRAINT daz_retry_queue_priority_check CHECK (priority BETWEEN 1 AND 10),
    CONSTRAINT daz_retry_queue_max_retries_check CHECK (
        max_retries BETWEEN 0 AND 1000
    ),
    CONSTRAINT daz_retry_queue_retry_count_check CHECK (
        retry_count BETWEEN 0 AND max_retries
    ),
    CONSTRAINT daz_retry_queue_retry_delay_seconds_check CHECK (
        retry_delay_seconds BETWEEN 0 AND 31536000
    ),
    CONSTRAINT daz_retry_queue_backoff_multiplier_check CHECK (
        backoff_multiplier BETWEEN 1 AND 10
    ),
    CONSTRAINT daz_retry_queue_max_retry_delay_seconds_check CHECK (
        max_retry_delay_seconds BETWEEN 0 AND 31536000
    ),
    CONSTRAINT daz_retry_queue_retry_jitter_check CHECK (
        retry_jitter BETWEEN 0 AND 1
    ),
    CONSTRAINT daz_retry_queue_event_data_check CHECK (
        jsonb_typeof(event_data) <> 'null'
    ),
    CONSTRAINT daz_retry_queue_event_metadata_check CHECK (
        jsonb_typeof(event_metadata) = 'object'
    ),
    CONSTRAINT daz_retry_queue_lease_check CHECK (
        (status = 'processing') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)
    ),
    CONSTRAINT daz_retry_queue_completed_at_check CHECK (
        (status IN ('completed', 'cancelled')) = (completed_at IS NOT NULL)
    ),
    CONSTRAINT daz_retry_queue_dead_lettered_at_check CHECK (
        (status = 'dead_letter') = (dead_lettered_at IS NOT NULL)
    )
)
FOR VALUES IN ('pending', 'processing')
WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- named as the id check of _retryq_inserted names a reused id: a live item's
-- id given again is refused under the same public name, not the partition's
ALTER TABLE _retryq_active ADD CONSTRAINT daz_retry_queue_id_unique PRIMARY KEY (id);

CREATE INDEX _retryq_active_due_idx
ON _retryq_active (priority, next_retry_at, id);

-- A worker routed to some event types (acquire_retry_items' p_event_types)
-- walks only their items: without this it walked every other type's due
-- items first (50-140 ms per call behind 100,000 of them). Not partial: a
-- predicate on status would make every lease a non-HOT update.
CREATE INDEX _retryq_active_routed_idx
ON _retryq_active (event_type, priority, next_retry_at, id);

-- A producer inserts only what an enqueue may set: the guide's columns, and
-- what add_many's COPY sends (event_id, created_at and next_retry_at, which
-- _retryq_insert_clock holds to the server's clock and the enqueue delay
-- bound). id, status, retry_count, the lease, the error fields and the finish
-- times take their defaults: a producer cannot write an item in any state but
-- new and pending, nor choose its id (ids come from the server: an explicit
-- id is 42501, whatever the isolation level or the fate of the item that had
-- it).
GRANT INSERT (
    event_id, event_type, channel_name, plugin_name, event_data,
    event_metadata, max_retries, retry_delay_seconds, backoff_multiplier,
    max_retry_delay_seconds, retry_jitter, priority, correlation_id, tags,
    created_at, next_retry_at
) ON daz_retry_queue TO retryq_producer;
-- The guide's INSERT ... RETURNING id, event_id needs SELECT on exactly those
-- two columns, and the id default needs the sequence.
GRANT SELECT (id, event_id) ON daz_retry_queue TO retryq_producer;
GRANT USAGE ON SEQUENCE daz_retry_queue_id_seq TO retryq_producer;

-- The Python worker reads the queue to know how long to sleep, and its
-- --metrics-port serves the queue's metrics; retryq metrics reads it too.
GRANT SELECT ON daz_retry_queue TO retryq_worker, retryq_admin;

-- retryq:undo
DROP TABLE daz_retry_queue;
