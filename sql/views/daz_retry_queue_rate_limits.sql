-- One row per rate limit, by the server's clock: leases_in_period counts the
-- leases of the last period (the tokens used within it), tokens_free what
-- acquire may still lease now, next_token_at when the next token frees (NULL
-- while one is free).
CREATE OR REPLACE VIEW daz_retry_queue_rate_limits AS
SELECT
    l.event_type,
    nullif(l.plugin_name, '') AS plugin_name,
    l.max_leases,
    extract(EPOCH FROM l.period)::double precision AS period_seconds,
    t.used AS leases_in_period,
    l.max_leases - t.used AS tokens_free,
    CASE WHEN t.used >= l.max_leases THEN t.oldest + l.period END
        AS next_token_at,
    l.updated_at
FROM _retryq_rate_limit AS l
CROSS JOIN LATERAL (
    SELECT
        count(*) FILTER (WHERE u.used_at > now() - l.period)::integer AS used,
        min(u.used_at) FILTER (WHERE u.used_at > now() - l.period) AS oldest
    FROM _retryq_rate_token AS u
    WHERE u.event_type = l.event_type AND u.plugin_name = l.plugin_name
) AS t;

GRANT SELECT ON daz_retry_queue_rate_limits TO retryq_worker, retryq_admin;
