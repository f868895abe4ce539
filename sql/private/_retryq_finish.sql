-- Moves active rows to the finished partition as p_status ('completed',
-- 'cancelled' or 'dead_letter'), for cancel_retry_items and _retryq_bury
-- (acquire's and fail_retry_item's dead letters). complete_retry_item and
-- complete_retry_items keep a copy of their own: on the completion path the
-- nested call cost complete_retry_items 7% of its server time at batch 10;
-- a test compares the rows the three write. The items p_ids; with
-- p_worker_id only those leased to that worker (the others are left as they
-- are). A dead letter takes p_entry's error and code and appends p_entry to
-- its history, with its attempt number and (unless p_entry names one) the
-- lease holder filled in; completed and cancelled items keep theirs. The
-- DELETE takes the row locks the callers do not hold yet. Returns one row per
-- item moved: its key and whether it was leased.
CREATE OR REPLACE FUNCTION _retryq_finish(
    p_ids bigint[],
    p_status text,
    p_now timestamptz,
    p_worker_id text DEFAULT NULL,
    p_entry jsonb DEFAULT NULL
)
RETURNS TABLE (event_type text, plugin_name text, leased boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH gone AS (
        DELETE FROM _retryq_active AS a
        WHERE a.id = ANY(p_ids)
            AND (
                p_worker_id IS NULL
                OR a.status = 'processing' AND a.locked_by = p_worker_id
            )
        RETURNING a.*
    ),
    moved AS (
        INSERT INTO _retryq_finished (
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
            g.correlation_id, g.tags, p_status,
            CASE WHEN p_entry IS NULL THEN g.error_message ELSE p_entry ->> 'error'::text END,
            CASE WHEN p_entry IS NULL THEN g.last_error_code ELSE p_entry ->> 'code'::text END,
            CASE
                WHEN p_entry IS NULL THEN g.error_history
                ELSE _retryq_history_add(
                    g.error_history,
                    p_entry || pg_catalog.jsonb_build_object(
                        'worker_id', coalesce(p_entry ->> 'worker_id'::text, g.locked_by)
                    )
                )
            END,
            g.created_at, g.next_retry_at, g.last_attempted_at,
            CASE WHEN p_status <> 'dead_letter' THEN p_now END,
            CASE WHEN p_status = 'dead_letter' THEN p_now END,
            NULL, NULL, g.dedupe_key
        FROM gone AS g
        RETURNING 1
    )
    -- moved runs whether or not it is read (a data-modifying CTE); read it
    -- so that the rows come back only once it ran
    SELECT g.event_type, g.plugin_name, g.status = 'processing'
    FROM gone AS g
    WHERE (SELECT pg_catalog.count(*) FROM moved) >= 0;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_finish FROM public;
