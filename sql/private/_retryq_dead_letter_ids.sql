-- The ids of the dead letters a filter chooses: the one filter that
-- list_dead_letter_items, requeue_dead_letter_items and
-- purge_dead_letter_items share, so a listing shows exactly what the same
-- filter would replay or delete. Each filter is ANDed; a NULL one is not
-- applied. With p_need_filter, at least one must be given (22023 naming
-- item_ids), so that a slip never chooses every dead letter; p_item_ids must
-- be one-dimensional without a NULL element (22023). No row locks:
-- each caller locks (or skips) the rows it changes and checks their status
-- again.
CREATE OR REPLACE FUNCTION _retryq_dead_letter_ids(
    p_item_ids bigint[],
    p_event_type text,
    p_plugin_name text,
    p_error_code text,
    p_dead_before timestamptz,
    p_need_filter boolean
)
RETURNS SETOF bigint
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_need_filter THEN
        PERFORM _retryq_check(
            pg_catalog.num_nonnulls(
                p_item_ids, p_event_type, p_plugin_name, p_error_code,
                p_dead_before
            ) > 0,
            'item_ids',
            'give item_ids, event_type, plugin_name, error_code or dead_before'
        );
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
    RETURN QUERY
    SELECT f.id
    FROM _retryq_finished AS f
    WHERE f.status = 'dead_letter'
        AND (p_item_ids IS NULL OR f.id = ANY(p_item_ids))
        AND (p_event_type IS NULL OR f.event_type = p_event_type)
        AND (p_plugin_name IS NULL OR f.plugin_name = p_plugin_name)
        AND (p_error_code IS NULL OR f.last_error_code = p_error_code)
        AND (p_dead_before IS NULL OR f.dead_lettered_at < p_dead_before);
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_dead_letter_ids FROM public;
