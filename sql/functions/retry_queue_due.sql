-- When the queue next has work, by the server's clock: whether any item is
-- pending or processing; seconds until the earliest pending item is due
-- (negative when one is overdue, NULL when none is pending); and how long the
-- oldest due item that nobody holds has waited (0 when none). A worker sleeps
-- by the second, `retryq metrics` exports the third. One short index scan per
-- priority (1..10, the table's range), the walk acquire makes; leases that
-- are about to expire are left out of the second (finding them would scan
-- every processing row, and a worker's poll covers them).
-- p_event_types and p_plugin_names route as in acquire_retry_items: the
-- answer then concerns only those items. Paused items (retry_queue_pause)
-- count as active but never as due, so a worker does not poll for what it
-- may not lease.
CREATE OR REPLACE FUNCTION retry_queue_due(
    p_event_types text[] DEFAULT NULL,
    p_plugin_names text[] DEFAULT NULL
)
RETURNS TABLE (
    active boolean,
    seconds_until_due double precision,
    oldest_due_age_seconds double precision
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_paused boolean := EXISTS (SELECT 1 FROM _retryq_pause);
BEGIN
    IF p_event_types IS NOT NULL OR p_plugin_names IS NOT NULL THEN
        PERFORM _retryq_check_routing(p_event_types, p_plugin_names);
    END IF;
    RETURN QUERY
    SELECT
        EXISTS (
            SELECT 1 FROM _retryq_active AS a
            WHERE (p_event_types IS NULL OR a.event_type = ANY(p_event_types))
                AND (
                    p_plugin_names IS NULL
                    OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                )
        ),
        extract(epoch FROM (
            SELECT pg_catalog.min(n.next_retry_at)
            FROM pg_catalog.generate_series(1, 10) AS p (priority)
            CROSS JOIN LATERAL (
                SELECT a.next_retry_at
                FROM _retryq_active AS a
                WHERE a.status = 'pending' AND a.priority = p.priority
                    AND (p_event_types IS NULL OR a.event_type = ANY(p_event_types))
                    AND (
                        p_plugin_names IS NULL
                        OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                    )
                    AND (
                        NOT v_paused
                        OR NOT EXISTS (
                            SELECT 1 FROM _retryq_pause AS z
                            WHERE z.event_type IN ('', a.event_type)
                                AND z.plugin_name IN ('', coalesce(a.plugin_name, ''))
                        )
                    )
                ORDER BY a.next_retry_at
                LIMIT 1
            ) AS n
        ) - now())::double precision,
        coalesce(extract(epoch FROM now() - (
            SELECT pg_catalog.min(n.next_retry_at)
            FROM pg_catalog.generate_series(1, 10) AS p (priority)
            CROSS JOIN LATERAL (
                SELECT a.next_retry_at
                FROM _retryq_active AS a
                WHERE a.priority = p.priority
                    AND a.next_retry_at <= now()
                    AND (a.locked_until IS NULL OR a.locked_until <= now())
                    AND (p_event_types IS NULL OR a.event_type = ANY(p_event_types))
                    AND (
                        p_plugin_names IS NULL
                        OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                    )
                    AND (
                        NOT v_paused
                        OR NOT EXISTS (
                            SELECT 1 FROM _retryq_pause AS z
                            WHERE z.event_type IN ('', a.event_type)
                                AND z.plugin_name IN ('', coalesce(a.plugin_name, ''))
                        )
                    )
                ORDER BY a.next_retry_at
                LIMIT 1
            ) AS n
        ))::double precision, 0);
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_queue_due FROM public;
GRANT EXECUTE ON FUNCTION retry_queue_due TO retryq_worker, retryq_admin;
