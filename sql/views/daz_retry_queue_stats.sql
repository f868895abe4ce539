-- One row per (status, event_type, plugin_name) for dashboards. paused: the
-- group's items wait for retry_queue_resume (pending and processing only).
CREATE OR REPLACE VIEW daz_retry_queue_stats AS
SELECT
    q.status,
    q.event_type,
    q.plugin_name,
    count(*) AS item_count,
    avg(q.retry_count)::double precision AS avg_retry_count,
    max(q.retry_count) AS max_retry_count,
    min(q.created_at) AS oldest_created_at,
    max(q.created_at) AS newest_created_at,
    count(*) FILTER (
        WHERE q.status = 'processing' AND q.locked_until > now()
    ) AS leased_count,
    q.status IN ('pending', 'processing') AND EXISTS (
        SELECT 1 FROM _retryq_pause AS z
        WHERE
            (z.event_type IS NULL OR z.event_type = q.event_type)
            AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(q.plugin_name, ''))
    ) AS paused
FROM daz_retry_queue AS q
GROUP BY q.status, q.event_type, q.plugin_name;

GRANT SELECT ON daz_retry_queue_stats TO retryq_admin;
