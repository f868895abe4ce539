-- Marks many items done in one statement; returns how many it completed. Ids
-- not leased to p_worker_id are skipped. A success ends its key's failure
-- streak and closes its circuit; that bookkeeping is skipped entirely while
-- no key has a streak. p_item_ids must be one-dimensional without a NULL
-- element (22023, see _retryq_check_item_ids).
-- p_leased_at: the lease fence (see complete_retry_item), one grant time per
-- element of p_item_ids, in its order; a list of another length or with a
-- NULL element is refused (22023 naming leased_at). NULL: no fence.
CREATE OR REPLACE FUNCTION complete_retry_items(
    p_item_ids bigint[],
    p_worker_id text,
    p_now timestamptz DEFAULT now(),
    p_leased_at timestamptz[] DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
-- generic plans, and no jit = off: see complete_retry_item
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
    v_dirty boolean;
    v_event_types text[];
    v_plugin_names text[];
    -- the ids as given, whose order p_leased_at follows
    v_ids bigint[] := p_item_ids;
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    -- the checks' conditions inline, their calls only to raise: a nested call
    -- per statement costs the hot path more than the rule itself
    IF p_item_ids IS NULL THEN
        PERFORM _retryq_check(FALSE, 'item_ids', 'must not be null');
    END IF;
    IF pg_catalog.cardinality(p_item_ids) > 1000 THEN
        PERFORM _retryq_check_limit('item_ids', pg_catalog.cardinality(p_item_ids));
    END IF;
    -- a second dimension or a NULL element: refused by name (see
    -- _retryq_check_item_ids; the dimension is tested first)
    IF pg_catalog.array_ndims(p_item_ids) > 1
        OR pg_catalog.array_position(p_item_ids, NULL) IS NOT NULL THEN
        PERFORM _retryq_check_item_ids(p_item_ids);
    END IF;
    IF p_leased_at IS NOT NULL AND (
        pg_catalog.array_ndims(p_leased_at) > 1
        OR pg_catalog.cardinality(p_leased_at) <> pg_catalog.cardinality(p_item_ids)
        OR pg_catalog.array_position(p_leased_at, NULL) IS NOT NULL
    ) THEN
        PERFORM _retryq_check(
            FALSE, 'leased_at',
            'must be one-dimensional, one grant time per item id, without a NULL element'
        );
    END IF;
    IF (pg_catalog.ascii(p_worker_id) BETWEEN 33 AND 126
        AND pg_catalog.length(p_worker_id) <= 200) IS NOT TRUE THEN
        PERFORM _retryq_check_worker(p_worker_id);
    END IF;
    IF pg_catalog.current_setting('retryq.took_over', TRUE) = 'yes' THEN
        -- this transaction took over leases: it must not wait for an item
        -- (lock order: see _retryq_circuit_lock); only the free ones count
        p_item_ids := ARRAY(
            SELECT a.id FROM _retryq_active AS a
            WHERE a.id = ANY(p_item_ids)
                AND a.status = 'processing'
                AND a.locked_by = p_worker_id
                AND (
                    p_leased_at IS NULL
                    OR (a.id, pg_catalog.date_trunc('milliseconds', a.last_attempted_at)) IN (
                        SELECT k.id, pg_catalog.date_trunc('milliseconds', k.leased_at)
                        FROM ROWS FROM (
                            pg_catalog.unnest(v_ids), pg_catalog.unnest(p_leased_at)
                        ) AS k (id, leased_at)
                    )
                )
            ORDER BY a.id
            FOR UPDATE SKIP LOCKED
        );
    END IF;
    v_dirty := EXISTS (
        SELECT 1 FROM _retryq_circuit AS c
        WHERE c.state <> 'closed' OR c.consecutive_failures > 0
    );
    WITH gone AS (
        DELETE FROM _retryq_active AS a
        WHERE a.id = ANY(p_item_ids)
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
            -- a hashed subplan: one pass over the pairs, not one per row
            AND (
                p_leased_at IS NULL
                OR (a.id, pg_catalog.date_trunc('milliseconds', a.last_attempted_at)) IN (
                    SELECT k.id, pg_catalog.date_trunc('milliseconds', k.leased_at)
                    FROM ROWS FROM (
                        pg_catalog.unnest(v_ids), pg_catalog.unnest(p_leased_at)
                    ) AS k (id, leased_at)
                )
            )
        RETURNING a.*
    ),
    -- the move of _retryq_finish, inline: see there. Routed through the
    -- finished partition, not into its leaf as complete_retry_item does: a
    -- direct insert checks each row against the leaf's partition bounds,
    -- routing finds the leaf once per row for less (callgrind, 100 ids a
    -- call: 59,700 instructions per item routed, 60,900 direct), for a setup
    -- per statement that costs a single id more than it saves (10,000).
    moved AS (
        INSERT INTO _retryq_finished AS f (
            id, event_id, event_type, channel_name, plugin_name, event_data,
            event_metadata, retry_count, max_retries, retry_delay_seconds,
            backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
            correlation_id, tags, status, error_message, last_error_code,
            error_history, created_at, next_retry_at, last_attempted_at,
            completed_at, dead_lettered_at, locked_by, locked_until, dedupe_key
        )
        SELECT
            g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name,
            g.event_data, g.event_metadata, g.retry_count, g.max_retries,
            g.retry_delay_seconds, g.backoff_multiplier,
            g.max_retry_delay_seconds, g.retry_jitter, g.priority,
            g.correlation_id, g.tags, 'completed', g.error_message,
            g.last_error_code, g.error_history, g.created_at, g.next_retry_at,
            g.last_attempted_at, p_now, NULL, NULL, NULL, g.dedupe_key
        FROM gone AS g
        RETURNING f.event_type, f.plugin_name
    )
    SELECT
        pg_catalog.count(*),
        pg_catalog.array_agg(m.event_type) FILTER (WHERE v_dirty),
        pg_catalog.array_agg(m.plugin_name) FILTER (WHERE v_dirty)
    INTO v_count, v_event_types, v_plugin_names
    FROM moved AS m;
    IF v_dirty AND v_count > 0 THEN
        PERFORM _retryq_circuit_succeeded(v_event_types, v_plugin_names, p_now);
    END IF;
    RETURN v_count;
END;
$$;

REVOKE EXECUTE ON FUNCTION complete_retry_items FROM public;
GRANT EXECUTE ON FUNCTION complete_retry_items TO retryq_worker;
