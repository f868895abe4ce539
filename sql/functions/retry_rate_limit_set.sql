-- Operator: at most p_max_leases leases of the key (p_event_type,
-- p_plugin_name; NULL or '' for items without a plugin) per
-- p_period_seconds, across all workers, counted at lease time by
-- acquire_retry_items. Creates the limit or changes it; returns true. A
-- window of one period that spans a change may hold the larger of the two
-- limits (a token row dropped by a lower limit and re-created by a higher one
-- keeps its last use). Refuses (22023, naming the field) a blank event type or
-- plugin name (see _retryq_check_plugin_name), max_leases
-- outside 1..100000, a period outside 0.001 s..365 days.
CREATE OR REPLACE FUNCTION retry_rate_limit_set(
    p_event_type text,
    p_plugin_name text,
    p_max_leases bigint,
    p_period_seconds double precision DEFAULT 1
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_plugin text := coalesce(p_plugin_name, '');
    v_rows integer;
BEGIN
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_period_seconds := coalesce(p_period_seconds, 1);
    PERFORM _retryq_check_circuit_key(p_event_type);
    PERFORM _retryq_check_plugin_name(p_plugin_name);
    PERFORM _retryq_check(
        p_max_leases BETWEEN 1 AND 100000,
        'max_leases', 'must be between 1 and 100000 (retry_rate_limit_clear removes a limit)'
    );
    PERFORM _retryq_check(
        p_period_seconds >= 0.001::float8 AND p_period_seconds <= 31536000::float8,
        'period_seconds', 'must be between 0.001 and 31536000'
    );
    -- lock order (see _retryq_key_lock): waits only while this transaction
    -- holds nothing, else refuses rather than risk a deadlock
    IF NOT _retryq_key_lock('rate_limit'::text, p_event_type, v_plugin, TRUE) THEN
        RAISE EXCEPTION 'retryq: the rate limit of (%, %) is held by another transaction',
            p_event_type, v_plugin
            USING ERRCODE = 'lock_not_available',
            HINT = 'Retry, or change rate limits before anything else in the transaction.';
    END IF;
    -- the limit row first, then its tokens: two calls for one key queue on
    -- the key's lock; acquire never waits for either (SKIP LOCKED)
    INSERT INTO _retryq_rate_limit AS l (event_type, plugin_name, max_leases, period)
    VALUES (
        p_event_type, v_plugin, p_max_leases,
        pg_catalog.make_interval(secs => p_period_seconds)
    )
    ON CONFLICT (event_type, plugin_name) DO UPDATE
    SET
        max_leases = excluded.max_leases,
        period = excluded.period,
        updated_at = pg_catalog.now();
    -- The limit's token rows (_retryq_rate_token): least(max_leases,
    -- _retryq_rate_rows()) of them, the tokens dealt round-robin, so that a
    -- row's cap only grows with the limit and a window spanning a change
    -- holds at most the larger limit. Fewer rows: the last slots go, whatever
    -- their last use; the limit keeps the latest of those uses.
    v_rows := least(p_max_leases, _retryq_rate_rows());
    WITH dropped AS (
        DELETE FROM _retryq_rate_token AS t
        WHERE t.event_type = p_event_type
            AND t.plugin_name = v_plugin
            AND t.slot > v_rows
        RETURNING t.used_at
    )
    UPDATE _retryq_rate_limit AS l
    SET dropped_used_at = greatest(
        l.dropped_used_at, (SELECT pg_catalog.max(d.used_at) FROM dropped AS d)
    )
    WHERE l.event_type = p_event_type
        AND l.plugin_name = v_plugin;
    -- the rows kept take their new cap and keep their use (a use beyond a
    -- lower cap has no room left until it ends)
    UPDATE _retryq_rate_token AS t
    SET cap = (p_max_leases - t.slot) / _retryq_rate_rows() + 1
    WHERE t.event_type = p_event_type
        AND t.plugin_name = v_plugin
        AND t.cap IS DISTINCT FROM (p_max_leases - t.slot) / _retryq_rate_rows() + 1;
    -- more rows: free at once, unless the limit dropped rows within the last
    -- period: then they are full and used as late as the latest dropped one
    -- (a limit lowered and raised again does not hand out its tokens afresh).
    -- The slots are 1..the old count (this call holds the limit's lock, and
    -- every call keeps them so): the new ones follow.
    INSERT INTO _retryq_rate_token AS t (event_type, plugin_name, slot, cap, used, used_at)
    SELECT
        p_event_type, v_plugin, g.slot, c.cap,
        CASE WHEN l.dropped_used_at = '-infinity' THEN 0 ELSE c.cap END,
        l.dropped_used_at
    FROM _retryq_rate_limit AS l
    CROSS JOIN pg_catalog.generate_series(
        (
            SELECT coalesce(pg_catalog.max(t.slot), 0) + 1
            FROM _retryq_rate_token AS t
            WHERE t.event_type = p_event_type
                AND t.plugin_name = v_plugin
        ),
        v_rows
    ) AS g (slot)
    CROSS JOIN LATERAL (
        SELECT ((p_max_leases - g.slot) / _retryq_rate_rows() + 1)::integer AS cap
    ) AS c
    WHERE l.event_type = p_event_type
        AND l.plugin_name = v_plugin;
    RETURN TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_rate_limit_set FROM public;
GRANT EXECUTE ON FUNCTION retry_rate_limit_set TO retryq_admin;
