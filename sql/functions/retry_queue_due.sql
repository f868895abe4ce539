-- When the queue next has work, by the server's clock: whether any item is
-- pending or processing; seconds until the earliest pending item is due
-- (negative when one is overdue, NULL when none is pending); and how long the
-- oldest due item that nobody holds has waited (0 when none). A worker sleeps
-- by the second, `retryq metrics` exports the third. One short index scan per
-- priority (1..10, the table's range), the walk acquire makes; leases that
-- are about to expire are left out of the second (finding them would scan
-- every processing row, and a worker's poll covers them).
-- p_event_types and p_plugin_names route as in acquire_retry_items: the
-- answer then concerns only those items, and the walks go over the listed
-- types' own items (per type and priority), never another type's backlog.
-- Paused items (retry_queue_pause) count as active but never as due, so a
-- worker does not poll for what it may not lease. Neither are items of a key
-- whose rate limit has no token free (retry_rate_limit_set): such an item is
-- due when the key's next token frees (its oldest use plus the period), or at
-- its own time if that is later; so a worker sleeps until then and
-- exit_when_idle can stop. With no limit set this costs one look at an empty
-- table, as in acquire. Items of a key whose circuit lets nothing through
-- (open in its cool-down, or half_open with its probe out) are held back the
-- same way, until acquire would lease the key's probe; a circuit an operator
-- opened (retry_circuit_open without seconds) holds its items until it is
-- closed: they are not due. Before, such items counted as due, and a worker
-- polled every 10 ms through an outage.
-- The third column leaves out held-back items too: their wait is the
-- circuit's or the limit's, not a shortage of workers.
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
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_paused boolean := EXISTS (SELECT 1 FROM _retryq_pause);
    -- rate limits whose every token is in use: their keys, and when each
    -- key's next token frees
    v_closed_events text[] := '{}';
    v_closed_plugins text[] := '{}';
    v_closed_until timestamptz[] := '{}';
    v_next timestamptz;
    v_next_closed timestamptz;
BEGIN
    IF p_event_types IS NOT NULL OR p_plugin_names IS NOT NULL THEN
        PERFORM _retryq_check_routing(p_event_types, p_plugin_names);
    END IF;
    -- the look acquire makes: no limit set, nothing more to do
    IF EXISTS (SELECT 1 FROM _retryq_rate_limit) THEN
        SELECT
            coalesce(pg_catalog.array_agg(l.event_type), '{}'),
            coalesce(pg_catalog.array_agg(l.plugin_name), '{}'),
            coalesce(pg_catalog.array_agg(f.frees_at), '{}')
        INTO v_closed_events, v_closed_plugins, v_closed_until
        FROM _retryq_rate_limit AS l
        -- a token row takes leases again a period after its last use, or,
        -- with room left, a period after its use before (_retryq_rate_token);
        -- the key's next token is its rows' earliest
        CROSS JOIN LATERAL (
            SELECT pg_catalog.min(
                CASE WHEN t.used < t.cap THEN t.prev_used_at ELSE t.used_at END
            ) + l.period AS frees_at
            FROM _retryq_rate_token AS t
            WHERE t.event_type = l.event_type AND t.plugin_name = l.plugin_name
        ) AS f
        WHERE f.frees_at > now();
    END IF;
    -- the keys whose circuit leases nothing now, and when acquire will lease
    -- their probe: every condition of acquire's probe query, as a time
    -- (NULL for a forced circuit: not before an operator closes it)
    IF EXISTS (SELECT 1 FROM _retryq_circuit AS c WHERE c.state <> 'closed') THEN
        SELECT
            v_closed_events || coalesce(pg_catalog.array_agg(c.event_type), '{}'),
            v_closed_plugins || coalesce(pg_catalog.array_agg(c.plugin_name), '{}'),
            v_closed_until || coalesce(pg_catalog.array_agg(f.frees_at), '{}')
        INTO v_closed_events, v_closed_plugins, v_closed_until
        FROM _retryq_circuit AS c
        LEFT JOIN _retryq_active AS a
            ON a.id = c.probe_id AND a.status = 'processing'
        CROSS JOIN LATERAL (
            SELECT CASE WHEN NOT c.forced THEN greatest(
                CASE WHEN c.state = 'open' THEN c.open_until END,
                c.next_probe_at,
                a.locked_until
            ) END AS frees_at
        ) AS f
        WHERE c.state <> 'closed' AND (c.forced OR f.frees_at > now());
    END IF;
    -- the earliest pending item of a key that may be leased now
    -- (routed: per listed type, over _retryq_active_routed_idx; a generic
    -- plan cannot make `p_event_types IS NULL OR ...` an index condition,
    -- so the unrouted walk and the routed one are statements of their own)
    IF p_event_types IS NULL THEN
        SELECT pg_catalog.min(n.next_retry_at) INTO v_next
        FROM pg_catalog.generate_series(1, 10) AS p (priority)
        CROSS JOIN LATERAL (
            SELECT a.next_retry_at
            FROM _retryq_active AS a
            WHERE a.status = 'pending' AND a.priority = p.priority
                AND (
                    p_plugin_names IS NULL
                    OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                )
                AND (
                    NOT v_paused
                    OR NOT EXISTS (
                        SELECT 1 FROM _retryq_pause AS z
                        WHERE (z.event_type IS NULL OR z.event_type = a.event_type)
                            AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
                    )
                )
                AND (
                    pg_catalog.cardinality(v_closed_events) = 0
                    OR NOT EXISTS (
                        SELECT 1
                        FROM ROWS FROM (
                            pg_catalog.unnest(v_closed_events),
                            pg_catalog.unnest(v_closed_plugins)
                        ) AS k (event_type, plugin_name)
                        WHERE k.event_type = a.event_type
                            AND k.plugin_name = coalesce(a.plugin_name, '')
                    )
                )
            ORDER BY a.next_retry_at
            LIMIT 1
        ) AS n;
    ELSE
        SELECT pg_catalog.min(n.next_retry_at) INTO v_next
        FROM (SELECT DISTINCT pg_catalog.unnest(p_event_types)) AS r (event_type)
        CROSS JOIN pg_catalog.generate_series(1, 10) AS p (priority)
        CROSS JOIN LATERAL (
            SELECT a.next_retry_at
            FROM _retryq_active AS a
            WHERE a.status = 'pending' AND a.priority = p.priority
                AND a.event_type = r.event_type
                AND (
                    p_plugin_names IS NULL
                    OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                )
                AND (
                    NOT v_paused
                    OR NOT EXISTS (
                        SELECT 1 FROM _retryq_pause AS z
                        WHERE (z.event_type IS NULL OR z.event_type = a.event_type)
                            AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
                    )
                )
                AND (
                    pg_catalog.cardinality(v_closed_events) = 0
                    OR NOT EXISTS (
                        SELECT 1
                        FROM ROWS FROM (
                            pg_catalog.unnest(v_closed_events),
                            pg_catalog.unnest(v_closed_plugins)
                        ) AS k (event_type, plugin_name)
                        WHERE k.event_type = a.event_type
                            AND k.plugin_name = coalesce(a.plugin_name, '')
                    )
                )
            ORDER BY a.next_retry_at
            LIMIT 1
        ) AS n;
    END IF;
    -- Of each key held back by its limit, the earliest pending item is due
    -- when the key's token frees or at its own time, whichever is later.
    -- Only items before v_next can come earlier, so each walk stops there.
    IF pg_catalog.cardinality(v_closed_events) > 0 THEN
        SELECT pg_catalog.min(greatest(k.frees_at, n.next_retry_at))
        INTO v_next_closed
        FROM ROWS FROM (
            pg_catalog.unnest(v_closed_events),
            pg_catalog.unnest(v_closed_plugins),
            pg_catalog.unnest(v_closed_until)
        ) AS k (event_type, plugin_name, frees_at)
        CROSS JOIN pg_catalog.generate_series(1, 10) AS p (priority)
        CROSS JOIN LATERAL (
            SELECT a.next_retry_at
            FROM _retryq_active AS a
            WHERE a.status = 'pending' AND a.priority = p.priority
                AND (v_next IS NULL OR a.next_retry_at < v_next)
                AND a.event_type = k.event_type
                AND coalesce(a.plugin_name, '') = k.plugin_name
                AND (p_event_types IS NULL OR a.event_type = ANY(p_event_types))
                AND (
                    p_plugin_names IS NULL
                    OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                )
                AND (
                    NOT v_paused
                    OR NOT EXISTS (
                        SELECT 1 FROM _retryq_pause AS z
                        WHERE (z.event_type IS NULL OR z.event_type = a.event_type)
                            AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
                    )
                )
            ORDER BY a.next_retry_at
            LIMIT 1
        ) AS n
        WHERE k.frees_at IS NOT NULL AND (v_next IS NULL OR k.frees_at < v_next);
        v_next := least(v_next, v_next_closed);
    END IF;
    -- whether any item is active, and how long the oldest due item nobody
    -- holds has waited (routed as the walk above). Epochs are subtracted, not
    -- times: an infinite next_retry_at (the owner may write one) gives
    -- -Infinity or Infinity seconds, where timestamptz - timestamptz fails
    -- (22008) and would stop every worker's poll
    IF p_event_types IS NULL THEN
        RETURN QUERY
        SELECT
            EXISTS (
                SELECT 1 FROM _retryq_active AS a
                WHERE p_plugin_names IS NULL
                    OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
            ),
            (extract(epoch FROM v_next) - extract(epoch FROM now()))::double precision,
            coalesce((extract(epoch FROM now()) - extract(epoch FROM (
                SELECT pg_catalog.min(n.next_retry_at)
                FROM pg_catalog.generate_series(1, 10) AS p (priority)
                CROSS JOIN LATERAL (
                    SELECT a.next_retry_at
                    FROM _retryq_active AS a
                    WHERE a.priority = p.priority
                        AND a.next_retry_at <= now()
                        AND (a.locked_until IS NULL OR a.locked_until <= now())
                        AND (
                            p_plugin_names IS NULL
                            OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                        )
                        AND (
                            NOT v_paused
                            OR NOT EXISTS (
                                SELECT 1 FROM _retryq_pause AS z
                                WHERE (z.event_type IS NULL OR z.event_type = a.event_type)
                                    AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
                            )
                        )
                        -- held back by a rate limit (a spent lease is buried
                        -- all the same, as in acquire: that takes no token)
                        AND (
                            pg_catalog.cardinality(v_closed_events) = 0
                            OR a.status = 'processing' AND a.retry_count >= a.max_retries
                            OR NOT EXISTS (
                                SELECT 1
                                FROM ROWS FROM (
                                    pg_catalog.unnest(v_closed_events),
                                    pg_catalog.unnest(v_closed_plugins)
                                ) AS k (event_type, plugin_name)
                                WHERE k.event_type = a.event_type
                                    AND k.plugin_name = coalesce(a.plugin_name, '')
                            )
                        )
                    ORDER BY a.next_retry_at
                    LIMIT 1
                ) AS n
            )))::double precision, 0);
    ELSE
        -- one look per listed type (a.event_type = ANY(...) got a
        -- sequential scan in the generic plan)
        RETURN QUERY
        SELECT
            EXISTS (
                SELECT 1
                FROM (SELECT DISTINCT pg_catalog.unnest(p_event_types)) AS r (event_type)
                WHERE EXISTS (
                    SELECT 1 FROM _retryq_active AS a
                    WHERE a.event_type = r.event_type
                        AND (
                            p_plugin_names IS NULL
                            OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                        )
                )
            ),
            (extract(epoch FROM v_next) - extract(epoch FROM now()))::double precision,
            coalesce((extract(epoch FROM now()) - extract(epoch FROM (
                SELECT pg_catalog.min(n.next_retry_at)
                FROM (SELECT DISTINCT pg_catalog.unnest(p_event_types)) AS r (event_type)
                CROSS JOIN pg_catalog.generate_series(1, 10) AS p (priority)
                CROSS JOIN LATERAL (
                    SELECT a.next_retry_at
                    FROM _retryq_active AS a
                    WHERE a.priority = p.priority
                        AND a.next_retry_at <= now()
                        AND (a.locked_until IS NULL OR a.locked_until <= now())
                        AND a.event_type = r.event_type
                        AND (
                            p_plugin_names IS NULL
                            OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                        )
                        AND (
                            NOT v_paused
                            OR NOT EXISTS (
                                SELECT 1 FROM _retryq_pause AS z
                                WHERE (z.event_type IS NULL OR z.event_type = a.event_type)
                                    AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
                            )
                        )
                        -- held back by a rate limit (a spent lease is buried
                        -- all the same, as in acquire: that takes no token)
                        AND (
                            pg_catalog.cardinality(v_closed_events) = 0
                            OR a.status = 'processing' AND a.retry_count >= a.max_retries
                            OR NOT EXISTS (
                                SELECT 1
                                FROM ROWS FROM (
                                    pg_catalog.unnest(v_closed_events),
                                    pg_catalog.unnest(v_closed_plugins)
                                ) AS k (event_type, plugin_name)
                                WHERE k.event_type = a.event_type
                                    AND k.plugin_name = coalesce(a.plugin_name, '')
                            )
                        )
                    ORDER BY a.next_retry_at
                    LIMIT 1
                ) AS n
            )))::double precision, 0);
    END IF;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_queue_due FROM public;
GRANT EXECUTE ON FUNCTION retry_queue_due TO retryq_worker, retryq_admin;
