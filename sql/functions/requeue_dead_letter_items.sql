-- Replays dead letters with a fresh retry budget, due at once. Chooses them by
-- ids and/or by event_type, plugin_name, last error code and dead-letter time
-- (_retryq_dead_letter_ids, shared with the listing and purge); at least one
-- filter is required so that a slip never replays everything.
-- Their error history is kept. Returns how many were requeued;
-- requeue_dead_letter_items_report does the work and also says which were
-- skipped and why.
-- Dedupe keys: a dead letter whose key a live item holds stays a dead letter
-- (that item does the work), and of several chosen dead letters with one key
-- only the newest (highest id) is requeued; the others are not counted.
-- Event ids, likewise: a dead letter whose event_id a live item holds (a
-- producer may give a finished item's event id to a new one) stays a dead
-- letter, so that one such row never fails the whole requeue.
CREATE OR REPLACE FUNCTION requeue_dead_letter_items(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_dead_before timestamptz DEFAULT NULL,
    p_now timestamptz DEFAULT now()
)
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
    SELECT pg_catalog.count(*)::integer
    FROM requeue_dead_letter_items_report(
        p_item_ids, p_event_type, p_plugin_name, p_error_code, p_dead_before,
        p_now
    ) AS r
    WHERE r.outcome = 'requeued';
$$;

REVOKE EXECUTE ON FUNCTION requeue_dead_letter_items FROM public;
GRANT EXECUTE ON FUNCTION requeue_dead_letter_items TO retryq_admin;
