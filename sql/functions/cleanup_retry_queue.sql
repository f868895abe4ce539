-- Removes completed, dead-letter and cancelled items that finished (or were
-- cancelled) more than p_retention_days ago, p_batch_size rows per statement,
-- at most p_max_rows in all (NULL: no limit). Dead letters and cancelled items
-- are copied to daz_retry_queue_archive first unless p_archive_dead_letters is
-- false; archived_count counts both. Pending and processing items
-- are never touched: they live in another partition. Rows locked by someone
-- else (a requeue in progress) are skipped, never waited for. For the shortest
-- locks, call it repeatedly with a small p_max_rows, one transaction each.
CREATE OR REPLACE FUNCTION cleanup_retry_queue(
    p_retention_days bigint DEFAULT 7,
    p_batch_size bigint DEFAULT 5000,
    p_max_rows bigint DEFAULT NULL,
    p_archive_dead_letters boolean DEFAULT TRUE,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (deleted_count bigint, archived_count bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_cutoff timestamptz;
    v_limit integer;
    v_deleted bigint := 0;
    v_archived bigint := 0;
    v_batch_deleted bigint;
    v_batch_archived bigint;
BEGIN
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_retention_days := coalesce(p_retention_days, 7);
    p_batch_size := coalesce(p_batch_size, 5000);
    p_archive_dead_letters := coalesce(p_archive_dead_letters, TRUE);
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    v_cutoff := _retryq_cleanup_cutoff(p_retention_days, p_now);
    PERFORM _retryq_check(
        p_batch_size BETWEEN 1 AND 100000,
        'batch_size', 'must be between 1 and 100000'
    );
    PERFORM _retryq_check(
        p_max_rows IS NULL OR p_max_rows >= 1,
        'max_rows', 'must be at least 1 or null'
    );
    PERFORM _retryq_check(
        p_archive_dead_letters IS NOT NULL,
        'archive_dead_letters', 'must not be null'
    );
    LOOP
        v_limit := least(
            p_batch_size::bigint, coalesce(p_max_rows - v_deleted, p_batch_size)
        );
        EXIT WHEN v_limit <= 0;
        WITH doomed AS (
            SELECT f.id
            FROM _retryq_finished AS f
            WHERE coalesce(f.completed_at, f.dead_lettered_at) < v_cutoff
            ORDER BY coalesce(f.completed_at, f.dead_lettered_at)
            LIMIT v_limit
            FOR UPDATE SKIP LOCKED
        ),
        gone AS (
            DELETE FROM _retryq_finished AS f
            USING doomed AS d
            WHERE f.id = d.id
            RETURNING f.*
        ),
        kept AS (
            -- by name: the archive has archived_at before the columns the
            -- queue gained later (dedupe_key)
            INSERT INTO daz_retry_queue_archive (
                id, event_id, event_type, channel_name, plugin_name, event_data,
                event_metadata, retry_count, max_retries, retry_delay_seconds,
                backoff_multiplier, max_retry_delay_seconds, retry_jitter,
                priority, correlation_id, tags, status, error_message,
                last_error_code, error_history, created_at, next_retry_at,
                last_attempted_at, completed_at, dead_lettered_at, locked_by,
                locked_until, archived_at, dedupe_key
            )
            SELECT
                g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name,
                g.event_data, g.event_metadata, g.retry_count, g.max_retries,
                g.retry_delay_seconds, g.backoff_multiplier,
                g.max_retry_delay_seconds, g.retry_jitter, g.priority,
                g.correlation_id, g.tags, g.status, g.error_message,
                g.last_error_code, g.error_history, g.created_at,
                g.next_retry_at, g.last_attempted_at, g.completed_at,
                g.dead_lettered_at, g.locked_by, g.locked_until, p_now,
                g.dedupe_key
            FROM gone AS g
            WHERE g.status = ANY(_retryq_archived_statuses()) AND p_archive_dead_letters
            RETURNING 1
        )
        SELECT (SELECT pg_catalog.count(*) FROM gone), (SELECT pg_catalog.count(*) FROM kept)
        INTO v_batch_deleted, v_batch_archived;
        v_deleted := v_deleted + v_batch_deleted;
        v_archived := v_archived + v_batch_archived;
        EXIT WHEN v_batch_deleted < v_limit;
    END LOOP;
    RETURN QUERY SELECT v_deleted, v_archived;
END;
$$;

REVOKE EXECUTE ON FUNCTION cleanup_retry_queue FROM public;
GRANT EXECUTE ON FUNCTION cleanup_retry_queue TO retryq_admin;
