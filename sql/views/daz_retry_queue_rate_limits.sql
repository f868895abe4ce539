-- One row per rate limit, by the server's clock: leases_in_period counts the
-- leases the limit still holds against the last period (the current uses of
-- its token rows whose latest lease lies within it; see _retryq_rate_token),
-- tokens_free what acquire may still lease now, next_token_at when the next
-- token frees (NULL while one is free).
CREATE OR REPLACE VIEW daz_retry_queue_rate_limits AS
SELECT
    l.event_type,
    nullif(l.plugin_name, '') AS plugin_name,
    l.max_leases,
    extract(EPOCH FROM l.period)::double precision AS period_seconds,
    t.used AS leases_in_period,
    t.free AS tokens_free,
    CASE WHEN t.free = 0 THEN t.next END AS next_token_at,
    l.updated_at
FROM _retryq_rate_limit AS l
CROSS JOIN LATERAL (
    SELECT
        coalesce(sum(u.used) FILTER (WHERE u.used_at > now() - l.period), 0)::integer
            AS used,
        coalesce(sum(
            CASE
                WHEN u.used_at <= now() - l.period THEN u.cap
                WHEN u.prev_used_at <= now() - l.period
                    THEN greatest(u.cap - u.used, 0)
                ELSE 0
            END
        ), 0)::integer AS free,
        min(
            CASE WHEN u.used < u.cap THEN u.prev_used_at ELSE u.used_at END
        ) + l.period AS next
    FROM _retryq_rate_token AS u
    WHERE u.event_type = l.event_type AND u.plugin_name = l.plugin_name
) AS t;

GRANT SELECT ON daz_retry_queue_rate_limits TO retryq_worker, retryq_admin;
