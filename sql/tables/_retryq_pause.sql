-- Operators' pauses (retry_queue_pause): items of a paused key are not leased
-- until retry_queue_resume. A few rows at most, usually none, so that acquire
-- can afford one look at it on every call. A key is stored as the operator
-- gives it to retry_queue_pause (and as daz_retry_queue_pauses shows it):
-- event_type NULL pauses every event type; plugin_name NULL every plugin
-- (items without one included), '' only the items without a plugin
-- (plugin_name NULL or '' in the queue, as for circuits, rate limits and
-- routing), any other value that plugin's items. One row per key: NULLs are
-- not distinct in the unique key (PostgreSQL 15, the oldest release still
-- supported).
-- Unlike a circuit's forced open state, a pause is no failure streak: it is
-- kept apart, and closing a circuit never resumes a pause.
CREATE TABLE _retryq_pause (
    event_type text,
    plugin_name text,
    paused_at timestamptz NOT NULL,
    paused_by text NOT NULL,
    reason text,
    CONSTRAINT _retryq_pause_key UNIQUE NULLS NOT DISTINCT (
        event_type, plugin_name
    ),
    -- '' meant "every event type" before NULL did: never stored again
    CONSTRAINT _retryq_pause_event_type_check CHECK (event_type <> '')
);

-- retryq:undo
DROP TABLE _retryq_pause;
