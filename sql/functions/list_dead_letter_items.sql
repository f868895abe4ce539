-- Lists dead letters, newest first (dead-letter time descending, then id),
-- chosen by the same filters as requeue_dead_letter_items and
-- purge_dead_letter_items; with no filter, every dead letter. At most p_limit
-- rows (NULL: all). What an operator looks at before a requeue or a purge, in
-- any language.
CREATE OR REPLACE FUNCTION list_dead_letter_items(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_dead_before timestamptz DEFAULT NULL,
    p_limit bigint DEFAULT 50
)
RETURNS TABLE (
    id bigint,
    event_id uuid,
    event_type text,
    channel_name text,
    plugin_name text,
    retry_count integer,
    max_retries integer,
    last_error_code text,
    error_message text,
    correlation_id text,
    created_at timestamptz,
    dead_lettered_at timestamptz
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_ids bigint[];
BEGIN
    PERFORM _retryq_check(
        p_limit IS NULL OR p_limit >= 1, 'limit', 'must be at least 1 or null'
    );
    v_ids := ARRAY(
        SELECT _retryq_dead_letter_ids(
            p_item_ids, p_event_type, p_plugin_name, p_error_code,
            p_dead_before, FALSE
        )
    );
    RETURN QUERY
    SELECT
        f.id, f.event_id, f.event_type, f.channel_name, f.plugin_name,
        f.retry_count, f.max_retries, f.last_error_code, f.error_message,
        f.correlation_id, f.created_at, f.dead_lettered_at
    FROM _retryq_finished AS f
    WHERE f.status = 'dead_letter'
        AND f.id = ANY(v_ids)
    ORDER BY f.dead_lettered_at DESC, f.id DESC
    LIMIT p_limit;
END;
$$;

REVOKE EXECUTE ON FUNCTION list_dead_letter_items FROM public;
GRANT EXECUTE ON FUNCTION list_dead_letter_items TO retryq_admin;
