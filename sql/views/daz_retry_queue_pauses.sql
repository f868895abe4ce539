-- One row per pause (retry_queue_pause): its key as retry_queue_pause and
-- retry_queue_resume take it (NULL: every event type, every plugin;
-- plugin_name '': the items without a plugin), who paused it, when and why,
-- and how many items it holds back now (pending, or processing with an
-- expired lease; an item under several pauses counts in each).
CREATE OR REPLACE VIEW daz_retry_queue_pauses AS
SELECT
    z.event_type,
    z.plugin_name,
    z.paused_at,
    z.paused_by,
    z.reason,
    (
        SELECT count(*)
        FROM _retryq_active AS a
        WHERE
            (z.event_type IS NULL OR z.event_type = a.event_type)
            AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
            AND (a.status = 'pending' OR a.locked_until <= now())
    ) AS held_count
FROM _retryq_pause AS z;

GRANT SELECT ON daz_retry_queue_pauses TO retryq_worker, retryq_admin;
