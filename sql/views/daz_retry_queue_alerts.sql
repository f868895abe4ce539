-- One row per item that needs a person's attention, with the reason. The
-- dead letters through the queue, not its finished partition: the planner
-- prunes to the partition that holds them, and the view does not depend on
-- how that partition is laid out (0039 split it in two).
CREATE OR REPLACE VIEW daz_retry_queue_alerts AS
SELECT
    'dead_letter' AS alert,
    f.id,
    f.event_type,
    f.plugin_name,
    f.retry_count,
    f.max_retries,
    f.error_message,
    f.last_error_code,
    f.dead_lettered_at AS since
FROM daz_retry_queue AS f
WHERE f.status = 'dead_letter'
UNION ALL
SELECT
    CASE
        WHEN a.status = 'processing' AND a.locked_until <= now()
            THEN 'lease_expired'
        WHEN a.retry_count > 0 AND a.retry_count >= a.max_retries - 1
            THEN 'near_retry_budget'
        ELSE 'stale_pending'
    END AS alert,
    a.id,
    a.event_type,
    a.plugin_name,
    a.retry_count,
    a.max_retries,
    a.error_message,
    a.last_error_code,
    CASE
        WHEN a.status = 'processing' AND a.locked_until <= now()
            THEN a.locked_until
        WHEN a.retry_count > 0 AND a.retry_count >= a.max_retries - 1
            THEN a.last_attempted_at
        ELSE a.created_at
    END AS since
FROM _retryq_active AS a
WHERE
    (a.status = 'processing' AND a.locked_until <= now())
    OR (a.retry_count > 0 AND a.retry_count >= a.max_retries - 1)
    OR (a.status = 'pending' AND a.created_at < now() - interval '1 day');

GRANT SELECT ON daz_retry_queue_alerts TO retryq_admin;
