-- Adds many items in one statement. p_items is a JSON array of objects whose
-- keys are enqueue_retry_item's parameter names without the p_ prefix; absent
-- keys take the same defaults. Returns the new ids in input order.
CREATE OR REPLACE FUNCTION enqueue_retry_items(
    p_items jsonb,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (id bigint, event_id uuid)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_known constant text[] := ARRAY[
        'event_type', 'event_data', 'channel_name', 'plugin_name',
        'event_metadata', 'max_retries', 'retry_delay_seconds',
        'backoff_multiplier', 'priority', 'correlation_id', 'tags',
        'delay_seconds', 'max_retry_delay_seconds', 'retry_jitter'
    ];
    v_problem text;
    v_unknown text;
BEGIN
    PERFORM _retryq_check(
        jsonb_typeof(p_items) = 'array', 'items', 'must be a JSON array'
    );
    -- One pass over the elements finds the first that is not an object, has
    -- a key we do not know (a misspelt key would silently fall back to its
    -- default) or an out-of-range delay; the table's constraints check the rest.
    SELECT
        CASE
            WHEN jsonb_typeof(e.v) <> 'object' THEN 'not_object'
            WHEN e.v - v_known <> '{}' THEN 'unknown_key'
            ELSE 'delay_seconds'
        END,
        CASE
            WHEN jsonb_typeof(e.v) = 'object'
                THEN (SELECT min(k) FROM jsonb_object_keys(e.v - v_known) AS k)
        END
    INTO v_problem, v_unknown
    FROM jsonb_array_elements(p_items) AS e (v)
    WHERE jsonb_typeof(e.v) <> 'object'
        OR e.v - v_known <> '{}'
        OR (e.v ->> 'delay_seconds')::double precision
        NOT BETWEEN 0 AND 31536000
    LIMIT 1;
    PERFORM _retryq_check(
        v_problem IS DISTINCT FROM 'not_object',
        'items', 'every element must be a JSON object'
    );
    PERFORM _retryq_check(
        v_problem IS DISTINCT FROM 'unknown_key',
        'items', format('unknown key %L', v_unknown)
    );
    PERFORM _retryq_check(
        v_problem IS DISTINCT FROM 'delay_seconds',
        'delay_seconds', 'must be between 0 and 31536000'
    );
    RETURN QUERY
    WITH src AS (
        SELECT r.*, o.n
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS o (v, n),
            jsonb_to_record(o.v) AS r (
                event_type text, event_data jsonb, channel_name text,
                plugin_name text, event_metadata jsonb, max_retries integer,
                retry_delay_seconds double precision,
                backoff_multiplier double precision, priority integer,
                correlation_id text, tags text[],
                delay_seconds double precision,
                max_retry_delay_seconds double precision,
                retry_jitter double precision
            )
    ),
    added AS (
        INSERT INTO daz_retry_queue AS q (
            event_type, channel_name, plugin_name, event_data,
            event_metadata, max_retries, retry_delay_seconds,
            backoff_multiplier, priority, correlation_id, tags,
            max_retry_delay_seconds, retry_jitter, created_at, next_retry_at
        )
        SELECT
            r.event_type, r.channel_name, r.plugin_name, r.event_data,
            coalesce(r.event_metadata, '{}'), coalesce(r.max_retries, 3),
            coalesce(r.retry_delay_seconds, 60),
            coalesce(r.backoff_multiplier, 2.0), coalesce(r.priority, 5),
            r.correlation_id, coalesce(r.tags, '{}'),
            coalesce(r.max_retry_delay_seconds, 86400),
            coalesce(r.retry_jitter, 0), p_now,
            p_now + make_interval(secs => coalesce(r.delay_seconds, 0))
        FROM src AS r
        ORDER BY r.n
        RETURNING q.id, q.event_id
    )
    -- ids come from one sequence in insertion order, so sorting restores input order
    SELECT a.id, a.event_id FROM added AS a ORDER BY a.id;
END;
$$;

REVOKE EXECUTE ON FUNCTION enqueue_retry_items FROM public;
GRANT EXECUTE ON FUNCTION enqueue_retry_items TO retryq_producer;
