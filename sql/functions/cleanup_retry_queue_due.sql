-- What cleanup_retry_queue would do now with the same p_retention_days,
-- doing none of it: what to show before a cleanup. due_count: the finished
-- items it would remove (completed, dead-letter and cancelled, by the same
-- cutoff, _retryq_cleanup_cutoff); archive_count: those it would copy to the
-- archive first (dead letters and cancelled items, _retryq_archived_statuses;
-- its archived_count with p_archive_dead_letters true); dead_letter_count:
-- the dead letters among them. Counted through the finished partition's age
-- index, so the cost grows with the rows past retention.
CREATE OR REPLACE FUNCTION cleanup_retry_queue_due(
    p_retention_days bigint DEFAULT 7,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (due_count bigint, dead_letter_count bigint, archive_count bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_cutoff timestamptz;
BEGIN
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_retention_days := coalesce(p_retention_days, 7);
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    v_cutoff := _retryq_cleanup_cutoff(p_retention_days, p_now);
    RETURN QUERY
    SELECT
        pg_catalog.count(*),
        pg_catalog.count(*) FILTER (WHERE f.status = 'dead_letter'),
        pg_catalog.count(*) FILTER (WHERE f.status = ANY(_retryq_archived_statuses()))
    FROM _retryq_finished AS f
    WHERE coalesce(f.completed_at, f.dead_lettered_at) < v_cutoff;
END;
$$;

REVOKE EXECUTE ON FUNCTION cleanup_retry_queue_due FROM public;
GRANT EXECUTE ON FUNCTION cleanup_retry_queue_due TO retryq_admin;
