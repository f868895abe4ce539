-- Cancels pending and processing items for good: each moves to the finished
-- partition with the final status 'cancelled' and completed_at set to the
-- cancel time. A cancelled item is never leased again (no requeue brings it
-- back: enqueue its event_data anew to run it), and cleanup_retry_queue
-- removes it after the same retention as completed items, archiving it with
-- the dead letters when those are archived.
-- Chooses items by ids and/or event_type, plugin_name, last error code and
-- creation time (p_created_before), the filters of the dead-letter functions;
-- each given one must match, and at least one is required (22023 naming
-- item_ids) so that a slip never cancels everything. p_item_ids must be
-- one-dimensional without a NULL element (22023, see _retryq_check_item_ids):
-- '{{1},{2}}' cancelled both items before.
-- A leased item is cancelled at once too. Its handler is not interrupted, but
-- its holder's next complete_retry_item(s), fail_retry_item or
-- extend_retry_lock finds no lease and returns false (0), so the attempt's
-- outcome is never recorded and the item never runs again.
-- Completed, dead-letter and already cancelled items are left alone and not
-- counted. A row another transaction holds at this moment (an acquire or an
-- acknowledgement under way) is skipped, never waited for: call again.
-- With p_dry_run, counts what would be cancelled and changes nothing.
-- Returns how many items were cancelled.
CREATE OR REPLACE FUNCTION cancel_retry_items(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_created_before timestamptz DEFAULT NULL,
    p_dry_run boolean DEFAULT FALSE,
    p_now timestamptz DEFAULT now()
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
    v_leased boolean;
BEGIN
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_dry_run := coalesce(p_dry_run, FALSE);
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check(
        pg_catalog.num_nonnulls(
            p_item_ids, p_event_type, p_plugin_name, p_error_code,
            p_created_before
        ) > 0,
        'item_ids',
        'give item_ids, event_type, plugin_name, error_code or created_before'
    );
    PERFORM _retryq_check(p_dry_run IS NOT NULL, 'dry_run', 'must not be null');
    IF pg_catalog.cardinality(p_item_ids) > 1000 THEN
        PERFORM _retryq_check_limit('item_ids', pg_catalog.cardinality(p_item_ids));
    END IF;
    -- a second dimension or a NULL element: refused by name (see
    -- _retryq_check_item_ids; the dimension is tested first)
    IF pg_catalog.array_ndims(p_item_ids) > 1
        OR pg_catalog.array_position(p_item_ids, NULL) IS NOT NULL THEN
        PERFORM _retryq_check_item_ids(p_item_ids);
    END IF;
    IF p_dry_run THEN
        SELECT pg_catalog.count(*)::integer INTO v_count
        FROM _retryq_active AS a
        WHERE (p_item_ids IS NULL OR a.id = ANY(p_item_ids))
            AND (p_event_type IS NULL OR a.event_type = p_event_type)
            AND (p_plugin_name IS NULL OR a.plugin_name = p_plugin_name)
            AND (p_error_code IS NULL OR a.last_error_code = p_error_code)
            AND (p_created_before IS NULL OR a.created_at < p_created_before);
        RETURN v_count;
    END IF;
    -- SKIP LOCKED: an item an acquire is leasing or its holder is
    -- acknowledging right now is left to it, never waited for, so a cancel
    -- never holds up a worker (and takes no circuit lock: no lock order to
    -- keep, see _retryq_circuit_lock). Its lease columns need no lock: the
    -- move itself ends the lease, and the holder's acknowledgement then finds
    -- no row.
    SELECT pg_catalog.count(*)::integer, coalesce(pg_catalog.bool_or(m.leased), FALSE)
    INTO v_count, v_leased
    FROM _retryq_finish(
        ARRAY(
            SELECT a.id
            FROM _retryq_active AS a
            WHERE (p_item_ids IS NULL OR a.id = ANY(p_item_ids))
                AND (p_event_type IS NULL OR a.event_type = p_event_type)
                AND (p_plugin_name IS NULL OR a.plugin_name = p_plugin_name)
                AND (p_error_code IS NULL OR a.last_error_code = p_error_code)
                AND (p_created_before IS NULL OR a.created_at < p_created_before)
            ORDER BY a.id
            FOR UPDATE SKIP LOCKED
        ),
        'cancelled',
        p_now
    ) AS m;
    IF v_leased THEN
        -- This transaction now holds rows whose holders may wait for them:
        -- like a takeover, it must not wait for an item from here on (lock
        -- order: see _retryq_circuit_lock)
        PERFORM pg_catalog.set_config('retryq.took_over', 'yes', TRUE);
    END IF;
    RETURN v_count;
END;
$$;

REVOKE EXECUTE ON FUNCTION cancel_retry_items FROM public;
GRANT EXECUTE ON FUNCTION cancel_retry_items TO retryq_admin;
