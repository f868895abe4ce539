-- One row per circuit with its settings resolved. state is what acquire
-- does now: an open circuit past its cool-down shows as half_open (its next
-- due item will be the probe).
CREATE OR REPLACE VIEW daz_retry_queue_circuits AS
SELECT
    c.event_type,
    nullif(c.plugin_name, '') AS plugin_name,
    CASE
        WHEN c.state = 'open' AND NOT c.forced AND c.open_until <= now()
            THEN 'half_open'
        ELSE c.state
    END AS state,
    c.forced,
    c.consecutive_failures,
    coalesce(c.failure_threshold, d.failure_threshold) AS failure_threshold,
    coalesce(c.cooldown_seconds, d.cooldown_seconds) AS cooldown_seconds,
    coalesce(c.max_cooldown_seconds, d.max_cooldown_seconds)
        AS max_cooldown_seconds,
    c.trips,
    c.open_until,
    c.probe_id AS probe_item_id,
    c.opened_at,
    c.closed_at,
    c.last_failure_at,
    c.times_opened,
    c.lease_expiries
FROM _retryq_circuit AS c
CROSS JOIN _retryq_circuit_defaults AS d;

GRANT SELECT ON daz_retry_queue_circuits TO retryq_worker, retryq_admin;
