-- One row per pause (retry_queue_pause): its key (NULL: every event type,
-- every plugin), who paused it, when and why, and how many items it holds
-- back now (pending, or processing with an expired lease; an item under
-- several pauses counts in each).
CREATE OR REPLACE VIEW daz_retry_queue_pauses AS
SELECT
    nullif(z.event_type, '') AS event_type,
    nullif(z.plugin_name, '') AS plugin_name,
    z.paused_at,
    z.paused_by,
    z.reason,
    (
        SELECT count(*)
        FROM _retryq_active AS a
        WHERE
            z.event_type IN ('', a.event_type)
            AND z.plugin_name IN ('', coalesce(a.plugin_name, ''))
            AND (a.status = 'pending' OR a.locked_until <= now())
    ) AS held_count
FROM _retryq_pause AS z;

GRANT SELECT ON daz_retry_queue_pauses TO retryq_worker, retryq_admin;
