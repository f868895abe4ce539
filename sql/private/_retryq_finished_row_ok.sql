-- The rules of the active partition's constraints (the partition's bounds
-- stand in for the status one), for a finished row. True, or raises 23514
-- check_violation naming the constraint that gives the rule on the active
-- partition and its column. Like a CHECK, a rule that comes out NULL passes.
-- tests/test_validation.py proves both partitions refuse the same rows.
CREATE OR REPLACE FUNCTION _retryq_finished_row_ok(
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
SET search_path FROM CURRENT
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
        WHEN NOT p_backoff_multiplier BETWEEN 1::float8 AND 10::float8
            THEN 'backoff_multiplier'
        WHEN NOT (p_status IN ('completed', 'cancelled'))
            = (p_completed_at IS NOT NULL)
            THEN 'completed_at'
        WHEN NOT (p_status = 'dead_letter') = (p_dead_lettered_at IS NOT NULL)
            THEN 'dead_lettered_at'
        WHEN NOT pg_catalog.jsonb_typeof(p_event_data) <> 'null' THEN 'event_data'
        WHEN NOT pg_catalog.jsonb_typeof(p_event_metadata) = 'object'
            THEN 'event_metadata'
        WHEN NOT (
            pg_catalog.length(p_event_type) <= 200 AND (
                pg_catalog.ascii(p_event_type) BETWEEN 33 AND 126
                OR p_event_type ~ '[^[:space:]\u0085\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]'
            )
        ) THEN 'event_type'
        WHEN NOT (p_status = 'processing')
            = (p_locked_by IS NOT NULL AND p_locked_until IS NOT NULL)
            THEN 'lease'
        WHEN NOT p_max_retries BETWEEN 0 AND 1000 THEN 'max_retries'
        WHEN NOT p_max_retry_delay_seconds BETWEEN 0::float8 AND 31536000::float8
            THEN 'max_retry_delay_seconds'
        WHEN NOT p_priority BETWEEN 1 AND 10 THEN 'priority'
        WHEN NOT p_retry_count BETWEEN 0 AND p_max_retries THEN 'retry_count'
        WHEN NOT p_retry_delay_seconds BETWEEN 0::float8 AND 31536000::float8
            THEN 'retry_delay_seconds'
        WHEN NOT p_retry_jitter BETWEEN 0::float8 AND 1::float8 THEN 'retry_jitter'
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

REVOKE EXECUTE ON FUNCTION _retryq_finished_row_ok FROM public;
