-- Deletes dead letters for good (no archive copy), chosen by the same filters
-- as requeue_dead_letter_items; at least one filter is required. Pending,
-- processing and completed items are never touched. Rows another session holds
-- (a requeue or a cleanup under way) are skipped, not waited for. Returns how
-- many were deleted.
CREATE OR REPLACE FUNCTION purge_dead_letter_items(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_dead_before timestamptz DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_ids bigint[];
    v_count integer;
BEGIN
    -- collected first, so that a missing filter is refused even when no row
    -- would have been looked at
    v_ids := ARRAY(
        SELECT _retryq_dead_letter_ids(
            p_item_ids, p_event_type, p_plugin_name, p_error_code,
            p_dead_before, TRUE
        )
    );
    WITH doomed AS (
        SELECT f.id
        FROM _retryq_finished AS f
        WHERE f.status = 'dead_letter'
            AND f.id = ANY(v_ids)
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM _retryq_finished AS f
    USING doomed AS d
    WHERE f.id = d.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

REVOKE EXECUTE ON FUNCTION purge_dead_letter_items FROM public;
GRANT EXECUTE ON FUNCTION purge_dead_letter_items TO retryq_admin;
