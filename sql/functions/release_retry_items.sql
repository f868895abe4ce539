-- Gives leased items back unprocessed (a worker shutting down): they become
-- pending at their old due time, so another worker takes them at once, and no
-- retry is spent. Returns how many were released. p_item_ids must be
-- one-dimensional without a NULL element (22023, see _retryq_check_item_ids).
-- p_leased_at: the lease fence (see complete_retry_item), one grant time per
-- element of p_item_ids, in its order; a list of another length or with a
-- NULL element is refused (22023 naming leased_at). NULL: no fence. A stale
-- release (its lease taken over and granted again to the same worker id)
-- must not give back the newer lease while its handler runs.
CREATE OR REPLACE FUNCTION release_retry_items(
    p_item_ids bigint[],
    p_worker_id text,
    p_leased_at timestamptz[] DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
    -- the ids as given, whose order p_leased_at follows
    v_ids bigint[] := p_item_ids;
BEGIN
    PERFORM _retryq_check(
        p_item_ids IS NOT NULL, 'item_ids', 'must not be null'
    );
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
    PERFORM _retryq_check_worker(p_worker_id);
    IF pg_catalog.current_setting('retryq.took_over', TRUE) = 'yes' THEN
        -- this transaction took over leases: it must not wait for an item
        -- (lock order: see _retryq_circuit_lock); only the free ones count
        p_item_ids := ARRAY(
            SELECT a.id FROM _retryq_active AS a
            WHERE a.id = ANY(p_item_ids)
                AND a.status = 'processing'
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
    UPDATE _retryq_active AS a
    SET status = 'pending', locked_by = NULL, locked_until = NULL
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
        );
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'release');
    END IF;
    RETURN v_count;
END;
$$;

REVOKE EXECUTE ON FUNCTION release_retry_items FROM public;
GRANT EXECUTE ON FUNCTION release_retry_items TO retryq_worker;
