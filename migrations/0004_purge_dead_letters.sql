-- depends: 0003_roles
-- retryq: purge_dead_letter_items, so that deleting dead letters for good is
-- a function retryq_admin may call, like requeue, rather than a DELETE that
-- needs table rights.

-- Deletes dead letters for good (no archive copy), chosen by the same filters
-- as requeue_dead_letter_items; at least one filter is required. Pending,
-- processing and completed items are never touched. Rows another session holds
-- (a requeue or a cleanup under way) are skipped, not waited for. Returns how
-- many were deleted.
CREATE FUNCTION purge_dead_letter_items(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_dead_before timestamptz DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM _retryq_check(
        num_nonnulls(
            p_item_ids, p_event_type, p_plugin_name, p_error_code,
            p_dead_before
        ) > 0,
        'item_ids',
        'give item_ids, event_type, plugin_name, error_code or dead_before'
    );
    WITH doomed AS (
        SELECT f.id
        FROM _retryq_finished AS f
        WHERE f.status = 'dead_letter'
            AND (p_item_ids IS NULL OR f.id = ANY(p_item_ids))
            AND (p_event_type IS NULL OR f.event_type = p_event_type)
            AND (p_plugin_name IS NULL OR f.plugin_name = p_plugin_name)
            AND (p_error_code IS NULL OR f.last_error_code = p_error_code)
            AND (p_dead_before IS NULL OR f.dead_lettered_at < p_dead_before)
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM _retryq_finished AS f
    USING doomed AS d
    WHERE f.id = d.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION purge_dead_letter_items('
        'bigint[], text, text, text, timestamptz) SET search_path = %I, pg_temp',
        current_schema()
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION purge_dead_letter_items(
    bigint[], text, text, text, timestamptz
) FROM public;

GRANT EXECUTE ON FUNCTION purge_dead_letter_items(
    bigint[], text, text, text, timestamptz
) TO retryq_admin;
