-- depends: 0004_purge_dead_letters
-- retryq: less written per state change (scripts/bench, per-item drain).
--
-- 1. The table's CHECK constraints move from daz_retry_queue to its active
--    partition, and the finished partition checks the same rules with one
--    constraint that calls _retryq_finished_row_ok. PostgreSQL prepares every
--    CHECK constraint of a table anew in each statement that writes a row to
--    it: complete_retry_item writes one row into the finished partition per
--    statement, and the fourteen cost about 40 of its 270 microseconds; one
--    constraint calling a function costs about half that. The active
--    partition keeps the fourteen: add_many's COPY writes thousands of rows
--    per statement, where a function call per row would cost more.
-- 2. The active partition's fillfactor goes from 70 to 50, so that every row
--    on a page can take a lease as a HOT update (see schema/retryq.sql). It
--    applies to pages written from now on.
--
-- Takes an ACCESS EXCLUSIVE lock on the queue while it rechecks every row
-- against the re-created constraints.

ALTER TABLE _retryq_active SET (fillfactor = 50);

ALTER TABLE daz_retry_queue
DROP CONSTRAINT daz_retry_queue_status_check,
DROP CONSTRAINT daz_retry_queue_event_type_check,
DROP CONSTRAINT daz_retry_queue_priority_check,
DROP CONSTRAINT daz_retry_queue_max_retries_check,
DROP CONSTRAINT daz_retry_queue_retry_count_check,
DROP CONSTRAINT daz_retry_queue_retry_delay_seconds_check,
DROP CONSTRAINT daz_retry_queue_backoff_multiplier_check,
DROP CONSTRAINT daz_retry_queue_max_retry_delay_seconds_check,
DROP CONSTRAINT daz_retry_queue_retry_jitter_check,
DROP CONSTRAINT daz_retry_queue_event_data_check,
DROP CONSTRAINT daz_retry_queue_event_metadata_check,
DROP CONSTRAINT daz_retry_queue_lease_check,
DROP CONSTRAINT daz_retry_queue_completed_at_check,
DROP CONSTRAINT daz_retry_queue_dead_lettered_at_check;

-- The same constraints, under the same names, as 0001 gave the parent.
ALTER TABLE _retryq_active
ADD CONSTRAINT daz_retry_queue_status_check CHECK (
    status IN ('pending', 'processing', 'completed', 'dead_letter')
),
-- not blank: tabs and newlines count as blank too, which btrim misses
ADD CONSTRAINT daz_retry_queue_event_type_check CHECK (
    length(event_type) <= 200 AND event_type ~ '[^[:space:]]'
),
ADD CONSTRAINT daz_retry_queue_priority_check CHECK (priority BETWEEN 1 AND 10),
ADD CONSTRAINT daz_retry_queue_max_retries_check CHECK (
    max_retries BETWEEN 0 AND 1000
),
ADD CONSTRAINT daz_retry_queue_retry_count_check CHECK (
    retry_count BETWEEN 0 AND max_retries
),
ADD CONSTRAINT daz_retry_queue_retry_delay_seconds_check CHECK (
    retry_delay_seconds BETWEEN 0 AND 31536000
),
ADD CONSTRAINT daz_retry_queue_backoff_multiplier_check CHECK (
    backoff_multiplier BETWEEN 1 AND 10
),
ADD CONSTRAINT daz_retry_queue_max_retry_delay_seconds_check CHECK (
    max_retry_delay_seconds BETWEEN 0 AND 31536000
),
ADD CONSTRAINT daz_retry_queue_retry_jitter_check CHECK (
    retry_jitter BETWEEN 0 AND 1
),
ADD CONSTRAINT daz_retry_queue_event_data_check CHECK (
    jsonb_typeof(event_data) <> 'null'
),
ADD CONSTRAINT daz_retry_queue_event_metadata_check CHECK (
    jsonb_typeof(event_metadata) = 'object'
),
ADD CONSTRAINT daz_retry_queue_lease_check CHECK (
    (status = 'processing') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)
),
ADD CONSTRAINT daz_retry_queue_completed_at_check CHECK (
    (status = 'completed') = (completed_at IS NOT NULL)
),
ADD CONSTRAINT daz_retry_queue_dead_lettered_at_check CHECK (
    (status = 'dead_letter') = (dead_lettered_at IS NOT NULL)
);

-- The rules of the active partition's constraints (the partition's bounds
-- stand in for the status one), for a finished row. True, or raises 23514
-- check_violation naming the constraint that gives the rule on the active
-- partition and its column. Like a CHECK, a rule that comes out NULL passes.
-- tests/test_validation.py proves both partitions refuse the same rows.
CREATE FUNCTION _retryq_finished_row_ok(
    p_status text,
    p_event_type text,
    p_priority integer,
    p_max_retries integer,
    p_retry_count integer,
    p_retry_delay_seconds double precision,
    p_backoff_multiplier double precision,
    p_max_retry_delay_seconds double precision,
    p_retry_jitter double precision,
    p_event_data jsonb,
    p_event_metadata jsonb,
    p_locked_by text,
    p_locked_until timestamptz,
    p_completed_at timestamptz,
    p_dead_lettered_at timestamptz
)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
AS $$
DECLARE
    v_column text;
    v_name text;
BEGIN
    -- one expression, the cheapest form in PL/pgSQL: it runs for every row.
    -- In the order of the constraints' names, the order PostgreSQL checks
    -- them in, so that a row breaking two rules is refused with the same name
    -- by either partition.
    v_column := CASE
        WHEN NOT p_backoff_multiplier BETWEEN 1 AND 10
            THEN 'backoff_multiplier'
        WHEN NOT (p_status = 'completed') = (p_completed_at IS NOT NULL)
            THEN 'completed_at'
        WHEN NOT (p_status = 'dead_letter') = (p_dead_lettered_at IS NOT NULL)
            THEN 'dead_lettered_at'
        WHEN NOT jsonb_typeof(p_event_data) <> 'null' THEN 'event_data'
        WHEN NOT jsonb_typeof(p_event_metadata) = 'object'
            THEN 'event_metadata'
        WHEN NOT (
            length(p_event_type) <= 200 AND p_event_type ~ '[^[:space:]]'
        ) THEN 'event_type'
        WHEN NOT (p_status = 'processing')
            = (p_locked_by IS NOT NULL AND p_locked_until IS NOT NULL)
            THEN 'lease'
        WHEN NOT p_max_retries BETWEEN 0 AND 1000 THEN 'max_retries'
        WHEN NOT p_max_retry_delay_seconds BETWEEN 0 AND 31536000
            THEN 'max_retry_delay_seconds'
        WHEN NOT p_priority BETWEEN 1 AND 10 THEN 'priority'
        WHEN NOT p_retry_count BETWEEN 0 AND p_max_retries THEN 'retry_count'
        WHEN NOT p_retry_delay_seconds BETWEEN 0 AND 31536000
            THEN 'retry_delay_seconds'
        WHEN NOT p_retry_jitter BETWEEN 0 AND 1 THEN 'retry_jitter'
    END;
    IF v_column IS NULL THEN
        RETURN TRUE;
    END IF;
    v_name := 'daz_retry_queue_' || v_column || '_check';
    RAISE EXCEPTION
        'new row for relation "daz_retry_queue" violates check constraint "%"',
        v_name
        USING ERRCODE = 'check_violation', CONSTRAINT = v_name,
            TABLE = 'daz_retry_queue',
            COLUMN = CASE v_column WHEN 'lease' THEN 'locked_by' ELSE v_column END;
END;
$$;

DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION _retryq_finished_row_ok(text, text, integer, integer, '
        'integer, double precision, double precision, double precision, '
        'double precision, jsonb, jsonb, text, timestamptz, timestamptz, '
        'timestamptz) SET search_path = %I, pg_temp',
        current_schema()
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_finished_row_ok(
    text, text, integer, integer, integer, double precision, double precision,
    double precision, double precision, jsonb, jsonb, text, timestamptz,
    timestamptz, timestamptz
) FROM public;

ALTER TABLE _retryq_finished
ADD CONSTRAINT _retryq_finished_row_check CHECK (
    _retryq_finished_row_ok(
        status, event_type, priority, max_retries, retry_count,
        retry_delay_seconds, backoff_multiplier, max_retry_delay_seconds,
        retry_jitter, event_data, event_metadata, locked_by, locked_until,
        completed_at, dead_lettered_at
    )
);
