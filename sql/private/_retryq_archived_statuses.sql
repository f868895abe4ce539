-- The finished statuses that cleanup_retry_queue copies to
-- daz_retry_queue_archive before deleting (dead letters and cancelled items;
-- completed items are deleted without a copy), and that
-- cleanup_retry_queue_due counts as archive_count: one list, so that the
-- count shown before a cleanup is the count it archives. IMMUTABLE with no
-- argument: the planner folds the call into a constant once per plan.
CREATE OR REPLACE FUNCTION _retryq_archived_statuses()
RETURNS text[]
LANGUAGE sql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
    SELECT ARRAY['dead_letter', 'cancelled']::text[]
$$;

REVOKE EXECUTE ON FUNCTION _retryq_archived_statuses FROM public;
