-- Gives leased items back unprocessed (a worker shutting down): they become
-- pending at their old due time, so another worker takes them at once, and no
-- retry is spent. Returns how many were released. p_item_ids must be
-- one-dimensional without a NULL element (22023, see _retryq_check_item_ids).
CREATE OR REPLACE FUNCTION release_retry_items(
    p_item_ids bigint[],
    p_worker_id text
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
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
    PERFORM _retryq_check_worker(p_worker_id);
    IF pg_catalog.current_setting('retryq.took_over', TRUE) = 'yes' THEN
        -- this transaction took over leases: it must not wait for an item
        -- (lock order: see _retryq_circuit_lock); only the free ones count
        p_item_ids := ARRAY(
            SELECT a.id FROM _retryq_active AS a
            WHERE a.id = ANY(p_item_ids)
                AND a.status = 'processing'
                AND a.locked_by = p_worker_id
            ORDER BY a.id
            FOR UPDATE SKIP LOCKED
        );
    END IF;
    UPDATE _retryq_active AS a
    SET status = 'pending', locked_by = NULL, locked_until = NULL
    WHERE a.id = ANY(p_item_ids)
        AND a.status = 'processing'
        AND a.locked_by = p_worker_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'release');
    END IF;
    RETURN v_count;
END;
$$;

REVOKE EXECUTE ON FUNCTION release_retry_items FROM public;
GRANT EXECUTE ON FUNCTION release_retry_items TO retryq_worker;
