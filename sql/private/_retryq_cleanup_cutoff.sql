-- The moment before which a finished item (completed, dead letter or
-- cancelled) is past its retention: p_now - p_retention_days. The rule
-- cleanup_retry_queue deletes by and cleanup_retry_queue_due counts by, both
-- comparing it with coalesce(completed_at, dead_lettered_at), the expression
-- of _retryq_finished_age_idx (a cancelled item's completed_at is its cancel
-- time); raises 22023 naming retention_days outside 0..36500.
CREATE OR REPLACE FUNCTION _retryq_cleanup_cutoff(
    p_retention_days integer,
    p_now timestamptz
)
RETURNS timestamptz
LANGUAGE plpgsql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM _retryq_check(
        p_retention_days BETWEEN 0 AND 36500,
        'retention_days', 'must be between 0 and 36500'
    );
    RETURN p_now - pg_catalog.make_interval(days => p_retention_days);
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_cleanup_cutoff FROM public;
