-- Leases up to p_batch_size due items to p_worker_id for
-- p_lock_timeout_seconds, most urgent first (priority descending, then due
-- time, then id). A lease that expired belongs to a worker that died or hung:
-- any worker takes it over, and the lost attempt counts against the item's
-- retry budget, so an item that kills every worker ends as a dead letter
-- instead of looping forever.
-- Circuit breaker: items whose circuit is not closed are skipped and
-- keep their budget; a circuit past its cool-down gets one probe item. With
-- every circuit closed the only extra cost is one look at an empty index.
-- Rate limits: an item of a rate-limited key is leased only with a token
-- of its key (see _retryq_rate_grant); keys without a token free (no token
-- row with room, see _retryq_rate_token) are skipped,
-- and so are keys whose tokens this call used up: the batch is filled with
-- other keys' items of the same priority before a less urgent one.
-- With no limit configured the only extra cost is one look at an empty table.
-- Never waits for a lock: items, tokens and circuit rows are taken with SKIP LOCKED,
-- the books of a lost lease only when free (lock order: _retryq_circuit_lock).
-- Routing: p_event_types and p_plugin_names, when not NULL, limit the lease
-- to items whose event_type (and plugin_name; '' for items without one) is
-- in the list, expired leases and circuit probes included: a worker never
-- touches the items of types it cannot handle. NULL takes every item. An
-- empty list, a NULL element, a blank event type or more than 1000 elements
-- are refused (22023 naming the parameter): an empty list is a caller's bug
-- (a worker without handlers), not a wish to lease everything or nothing.
-- A routed call walks only the listed types' items (one index range per
-- type and priority), so another type's backlog costs it nothing; the same
-- items in the same order as a walk of every item filtered by type.
-- Pauses (retry_queue_pause): items of a paused key are neither leased nor
-- taken over when their lease expired, and keep their budget; with nothing
-- paused the only extra cost is one look at an empty table.
CREATE OR REPLACE FUNCTION acquire_retry_items(
    p_worker_id text,
    p_batch_size bigint DEFAULT 10,
    p_lock_timeout_seconds bigint DEFAULT 300,
    p_now timestamptz DEFAULT now(),
    p_event_types text[] DEFAULT NULL,
    p_plugin_names text[] DEFAULT NULL
)
RETURNS TABLE (
    id bigint,
    event_id uuid,
    event_type text,
    channel_name text,
    plugin_name text,
    event_data jsonb,
    retry_count integer,
    max_retries integer,
    priority integer,
    correlation_id text,
    event_metadata jsonb,
    tags text[],
    created_at timestamptz,
    next_retry_at timestamptz,
    locked_until timestamptz,
    error_message text,
    last_error_code text
)
LANGUAGE plpgsql
-- Generic plans: planning the lease statement per call (the plan cache's
-- default) cost a third of the call. Its generic plan is the same index range
-- scan, checked at 1M due items (scripts/bench, acquire latency) and with due
-- times scattered across the heap. No JIT: the generic plan's cost estimate
-- (a tenth of the table for the LIMIT) passes jit_above_cost at 1M items, and
-- compiling it took 50 ms per call for a statement that runs in one.
SET plan_cache_mode = force_generic_plan
SET jit = off
-- No bitmap scans: the routed walk's generic plan estimates one candidate row
-- (its many filters multiply), so the LIMIT cannot favour the ordered range
-- scan of _retryq_active_routed_idx, and a bitmap scan of every due row of the
-- priority, sorted for the first ten, won on paper: 7-19 ms a call at 10,000
-- due of the worker's own types, against 1 ms. No statement here wants one.
SET enable_bitmapscan = off
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    -- set once p_batch_size passed its check (a bigint beyond integer
    -- would fail here unnamed)
    v_remaining integer;
    v_taken integer;
    v_asked integer;
    v_priority integer;
    v_until timestamptz;
    v_gated boolean;
    v_paused boolean;
    v_c record;
    v_probe_events text[] := '{}';
    v_probe_plugins text[] := '{}';
    v_probe_event text;
    v_probe_plugin text;
    v_probed boolean;
    v_limited boolean;
    v_closed_count integer;
    v_closed_events text[] := '{}';
    v_closed_plugins text[] := '{}';
    v_hint text;
    -- the routed walk (see below): the candidates, and where the walk of
    -- a priority goes on
    v_ids bigint[];
    v_ats timestamptz[];
    v_found integer;
    v_expired boolean;
    v_after_priority integer;
    v_after_at timestamptz;
    v_after_id bigint;
    -- the one listed event type, when p_event_types lists one (RetryWorker
    -- with one handler): the routed fast path below
    v_single_type text;
BEGIN
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_batch_size := coalesce(p_batch_size, 10);
    p_lock_timeout_seconds := coalesce(p_lock_timeout_seconds, 300);
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    -- the checks' conditions inline, their calls only to raise (see
    -- complete_retry_items)
    IF (pg_catalog.ascii(p_worker_id) BETWEEN 33 AND 126
        AND pg_catalog.length(p_worker_id) <= 200) IS NOT TRUE THEN
        PERFORM _retryq_check_worker(p_worker_id);
    END IF;
    IF (p_batch_size BETWEEN 1 AND 1000) IS NOT TRUE THEN
        PERFORM _retryq_check(FALSE, 'batch_size', 'must be between 1 and 1000');
    END IF;
    IF (p_lock_timeout_seconds BETWEEN 1 AND 86400) IS NOT TRUE THEN
        PERFORM _retryq_check(
            FALSE, 'lock_timeout_seconds', 'must be between 1 and 86400'
        );
    END IF;
    IF p_event_types IS NOT NULL OR p_plugin_names IS NOT NULL THEN
        PERFORM _retryq_check_routing(p_event_types, p_plugin_names);
        IF pg_catalog.cardinality(p_event_types) = 1 THEN
            v_single_type := p_event_types[1];
        END IF;
    END IF;
    v_remaining := p_batch_size;
    v_until := p_now + pg_catalog.make_interval(secs => p_lock_timeout_seconds);

    v_gated := EXISTS (
        SELECT 1 FROM _retryq_circuit AS c WHERE c.state <> 'closed'
    );
    -- an empty table with nothing paused: one look, no index
    v_paused := EXISTS (SELECT 1 FROM _retryq_pause);
    IF v_paused AND EXISTS (
        SELECT 1 FROM _retryq_pause AS z
        WHERE z.event_type IS NULL AND z.plugin_name IS NULL
    ) THEN
        -- the whole queue is paused
        RETURN;
    END IF;
    IF v_gated THEN
        -- Circuits ready for a probe: open past the cool-down, or half_open
        -- with no live probe lease. SKIP LOCKED: one worker probes a key at a
        -- time; the row lock lasts until this acquire commits, and by then the
        -- circuit says half_open with its probe_id.
        FOR v_c IN
            SELECT c.event_type, c.plugin_name, c.state, c.probe_id, a.locked_until
            FROM _retryq_circuit AS c
            LEFT JOIN _retryq_active AS a
                ON a.id = c.probe_id AND a.status = 'processing'
            WHERE c.state <> 'closed'
                AND NOT c.forced
                AND (c.next_probe_at IS NULL OR c.next_probe_at <= p_now)
                AND (c.state = 'half_open' OR c.open_until <= p_now)
                AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                -- only keys this caller may lease: another service's
                -- worker must not take (or postpone) their probe
                AND (p_event_types IS NULL OR c.event_type = ANY(p_event_types))
                AND (p_plugin_names IS NULL OR c.plugin_name = ANY(p_plugin_names))
                AND (
                    NOT v_paused
                    OR NOT EXISTS (
                        SELECT 1 FROM _retryq_pause AS z
                        WHERE (z.event_type IS NULL OR z.event_type = c.event_type)
                            AND (z.plugin_name IS NULL OR z.plugin_name = c.plugin_name)
                    )
                )
            ORDER BY c.event_type, c.plugin_name
            FOR UPDATE OF c SKIP LOCKED
        LOOP
            -- A circuit that another worker half-opened after this query's
            -- snapshot comes back re-checked against its new row, but still
            -- joined to the old probe (none): look at the probe's lease again.
            CONTINUE WHEN v_c.probe_id IS NOT NULL AND EXISTS (
                SELECT 1 FROM _retryq_active AS a
                WHERE a.id = v_c.probe_id
                    AND a.status = 'processing'
                    AND a.locked_until > p_now
            );
            IF v_c.state = 'half_open' AND v_c.locked_until IS NOT NULL THEN
                -- The probe's lease ran out: a hung dependency. That is a
                -- failed probe; the item itself is taken over later.
                PERFORM _retryq_circuit_failed(
                    v_c.event_type, v_c.plugin_name, 1, 0, p_now
                );
            ELSE
                v_probe_events := pg_catalog.array_append(v_probe_events, v_c.event_type);
                v_probe_plugins := pg_catalog.array_append(v_probe_plugins, v_c.plugin_name);
            END IF;
        END LOOP;
    END IF;

    -- Rate limits: the keys with no token free now are skipped below.
    -- Looked up front only when this session's last acquire found such a
    -- key (the session setting retryq.rate_closed, a hint: 'no' when it
    -- found none). While no limit is reached the look finds nothing, and it
    -- cost a fifth of a limited acquire; a key that ran out since is closed
    -- after the scan whose grant came back short (retryq.rate_short, set by
    -- _retryq_rate_grant), and that priority is scanned again without it,
    -- which leases the same items as closing it up front.
    v_limited := EXISTS (SELECT 1 FROM _retryq_rate_limit);
    IF v_limited
        AND pg_catalog.current_setting('retryq.rate_closed', TRUE) IS DISTINCT FROM 'no' THEN
        -- inline, not a call of a helper: a call with its own search_path
        -- cost twice the query. A look without locks: a token another
        -- acquire is taking still counts as free here (the grant then finds
        -- it taken).
        SELECT
            coalesce(pg_catalog.array_agg(l.event_type), '{}'),
            coalesce(pg_catalog.array_agg(l.plugin_name), '{}')
        INTO v_closed_events, v_closed_plugins
        FROM _retryq_rate_limit AS l
        WHERE NOT EXISTS (
            SELECT 1 FROM _retryq_rate_token AS t
            WHERE t.event_type = l.event_type
                AND t.plugin_name = l.plugin_name
                AND (
                    t.used_at <= p_now - l.period
                    OR t.used < t.cap AND t.prev_used_at <= p_now - l.period
                )
        );
    END IF;

    -- Probe passes first (one item per ready circuit), then the normal pass.
    FOR v_pass IN 1..coalesce(pg_catalog.array_length(v_probe_events, 1), 0) + 1 LOOP
        v_probe_event := v_probe_events[v_pass];
        v_probe_plugin := v_probe_plugins[v_pass];
        v_probed := FALSE;
        v_priority := 10;
        v_after_priority := NULL;
        -- One index range scan per priority, from most to least urgent: each
        -- stops at the first item not yet due, so items scheduled far ahead
        -- are never walked. Leased items keep their due time (so a lease is a
        -- HOT update); the scan filters out the unexpired ones.
        WHILE v_priority >= 1 AND v_remaining > 0 AND NOT v_probed LOOP
            -- Priorities without any item are skipped in one index descent
            -- (the highest one at or below this that has items) ...
            SELECT a.priority INTO v_priority
            FROM _retryq_active AS a
            WHERE a.priority <= v_priority
            ORDER BY a.priority DESC
            LIMIT 1;
            EXIT WHEN NOT FOUND;
            IF NOT v_gated AND NOT v_paused AND v_probe_event IS NULL
                AND p_event_types IS NULL THEN
                -- The usual case, in a lighter statement: no circuit or
                -- pause to heed, and no expired lease among the items it
                -- picks. If one is,
                -- it leases nothing, and the full statement below takes the
                -- same items in the same order.
                -- With no limit configured, a statement without the rate
                -- limits' parts: in the generic plan those parts, though
                -- never run, were set up and _retryq_rate_limit locked on
                -- every call (5% of acquire's instructions).
                IF NOT v_limited THEN
                    RETURN QUERY
                    WITH picked AS MATERIALIZED (
                        SELECT a.id, a.status
                        FROM _retryq_active AS a
                        WHERE a.priority = v_priority
                            AND a.next_retry_at <= p_now
                            AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                            AND (
                                p_plugin_names IS NULL
                                OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                            )
                        ORDER BY a.next_retry_at, a.id
                        LIMIT v_remaining
                        FOR UPDATE SKIP LOCKED
                    ),
                    taken AS (
                        UPDATE _retryq_active AS a
                        SET
                            status = 'processing',
                            locked_by = p_worker_id,
                            locked_until = v_until,
                            last_attempted_at = p_now
                        -- (in a subquery: run once, its array then scanned by
                        -- primary key)
                        WHERE a.id = ANY(ARRAY(SELECT p.id FROM picked AS p))
                            AND NOT EXISTS (
                                SELECT 1 FROM picked AS p
                                WHERE p.status = 'processing'
                            )
                        RETURNING a.*
                    )
                    SELECT
                        t.id, t.event_id, t.event_type,
                        coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
                        t.event_data, t.retry_count, t.max_retries, t.priority,
                        coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
                        t.created_at, t.next_retry_at, t.locked_until,
                        t.error_message, t.last_error_code
                    FROM taken AS t
                    ORDER BY t.next_retry_at, t.id;
                ELSE
                    RETURN QUERY
                    WITH picked AS MATERIALIZED (
                        SELECT a.id, a.status, a.event_type, a.plugin_name
                        FROM _retryq_active AS a
                        WHERE a.priority = v_priority
                            AND a.next_retry_at <= p_now
                            AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                            AND (
                                p_plugin_names IS NULL
                                OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                            )
                            -- skip keys whose rate limit has no token free
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
                        ORDER BY a.next_retry_at, a.id
                        LIMIT v_remaining
                        FOR UPDATE SKIP LOCKED
                    ),
                    taken AS (
                        UPDATE _retryq_active AS a
                        SET
                            status = 'processing',
                            locked_by = p_worker_id,
                            locked_until = v_until,
                            last_attempted_at = p_now
                        -- (in a subquery: run once, its array then scanned by
                        -- primary key)
                        WHERE a.id = ANY((SELECT
                            CASE
                                -- no item of a limited key: no token to take
                                WHEN NOT EXISTS (
                                    SELECT 1 FROM picked AS p
                                    JOIN _retryq_rate_limit AS l
                                        ON l.event_type = p.event_type
                                            AND l.plugin_name = coalesce(p.plugin_name, '')
                                ) THEN ARRAY(SELECT p.id FROM picked AS p)
                                -- rate limits: the items that get a token (none
                                -- when the full statement below takes over)
                                WHEN NOT EXISTS (
                                    SELECT 1 FROM picked AS p WHERE p.status = 'processing'
                                ) THEN _retryq_rate_grant(
                                    ARRAY(SELECT p.id FROM picked AS p),
                                    ARRAY(SELECT p.event_type FROM picked AS p),
                                    ARRAY(SELECT p.plugin_name FROM picked AS p),
                                    p_now
                                )
                            END
                        )::bigint[])
                            AND NOT EXISTS (
                                SELECT 1 FROM picked AS p
                                WHERE p.status = 'processing'
                            )
                        RETURNING a.*
                    )
                    SELECT
                        t.id, t.event_id, t.event_type,
                        coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
                        t.event_data, t.retry_count, t.max_retries, t.priority,
                        coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
                        t.created_at, t.next_retry_at, t.locked_until,
                        t.error_message, t.last_error_code
                    FROM taken AS t
                    ORDER BY t.next_retry_at, t.id;
                END IF;
                GET DIAGNOSTICS v_taken = ROW_COUNT;
                v_remaining := v_remaining - v_taken;
                CONTINUE WHEN v_remaining = 0;
                IF v_limited
                    AND pg_catalog.current_setting('retryq.rate_short', TRUE) = 'yes' THEN
                    PERFORM pg_catalog.set_config('retryq.rate_short', '', TRUE);
                    -- Keys whose tokens ran out in this scan are closed now
                    -- (the ones closed before stay so): their items left
                    -- without a token must not fill the window of the
                    -- statement below, other keys' items are leased instead.
                    SELECT
                        coalesce(pg_catalog.array_agg(l.event_type), '{}'),
                        coalesce(pg_catalog.array_agg(l.plugin_name), '{}')
                    INTO v_closed_events, v_closed_plugins
                    FROM _retryq_rate_limit AS l
                    WHERE NOT EXISTS (
                        SELECT 1 FROM _retryq_rate_token AS t
                        WHERE t.event_type = l.event_type
                            AND t.plugin_name = l.plugin_name
                            AND (
                                t.used_at <= p_now - l.period
                                OR t.used < t.cap AND t.prev_used_at <= p_now - l.period
                            )
                    )
                        OR EXISTS (
                            SELECT 1
                            FROM ROWS FROM (
                                pg_catalog.unnest(v_closed_events),
                                pg_catalog.unnest(v_closed_plugins)
                            ) AS k (event_type, plugin_name)
                            WHERE k.event_type = l.event_type
                                AND k.plugin_name = l.plugin_name
                        );
                END IF;
            END IF;
            IF v_single_type IS NOT NULL AND NOT v_gated AND NOT v_paused
                AND NOT v_limited AND v_probe_event IS NULL THEN
                -- Routed to one event type, and nothing to heed: the lighter
                -- statement above with the type as the leading condition of
                -- _retryq_active_routed_idx, one statement instead of the
                -- candidates' walk and its lock. An expired lease among the
                -- picked items makes it lease nothing, and what it left (or
                -- others held) goes to the routed walk below, as before.
                RETURN QUERY
                WITH picked AS MATERIALIZED (
                    SELECT a.id, a.status
                    FROM _retryq_active AS a
                    WHERE a.event_type = v_single_type
                        AND a.priority = v_priority
                        AND a.next_retry_at <= p_now
                        AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                        AND (
                            p_plugin_names IS NULL
                            OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                        )
                    ORDER BY a.next_retry_at, a.id
                    LIMIT v_remaining
                    FOR UPDATE SKIP LOCKED
                ),
                taken AS (
                    UPDATE _retryq_active AS a
                    SET
                        status = 'processing',
                        locked_by = p_worker_id,
                        locked_until = v_until,
                        last_attempted_at = p_now
                    WHERE a.id = ANY(ARRAY(SELECT p.id FROM picked AS p))
                        AND NOT EXISTS (
                            SELECT 1 FROM picked AS p
                            WHERE p.status = 'processing'
                        )
                    RETURNING a.*
                )
                SELECT
                    t.id, t.event_id, t.event_type,
                    coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
                    t.event_data, t.retry_count, t.max_retries, t.priority,
                    coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
                    t.created_at, t.next_retry_at, t.locked_until,
                    t.error_message, t.last_error_code
                FROM taken AS t
                ORDER BY t.next_retry_at, t.id;
                GET DIAGNOSTICS v_taken = ROW_COUNT;
                v_remaining := v_remaining - v_taken;
                CONTINUE WHEN v_remaining = 0;
            END IF;
            v_asked := CASE WHEN v_probe_event IS NULL THEN v_remaining ELSE 1 END;
            IF p_event_types IS NULL THEN
                -- A priority with nothing (more) due is skipped after one more
                -- probe, instead of running the statement below for it.
                PERFORM FROM _retryq_active AS a
                WHERE a.priority = v_priority
                    AND a.next_retry_at <= p_now
                    AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                    AND (
                        p_plugin_names IS NULL
                        OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                    )
                ORDER BY a.next_retry_at, a.id
                LIMIT 1;
                IF NOT FOUND THEN
                    v_priority := v_priority - 1;
                    CONTINUE;
                END IF;
                RETURN QUERY
                WITH locked AS MATERIALIZED (
                    SELECT
                        a.id,
                        a.event_type,
                        a.plugin_name,
                        a.next_retry_at,
                        a.status = 'processing' AS expired,
                        a.status = 'processing' AND a.retry_count >= a.max_retries
                            AS spent
                    FROM _retryq_active AS a
                    WHERE a.priority = v_priority
                        AND a.next_retry_at <= p_now
                        AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                        AND (
                            v_probe_event IS NULL
                            OR (
                                a.event_type = v_probe_event
                                AND coalesce(a.plugin_name, '') = v_probe_plugin
                            )
                        )
                        AND (
                            p_plugin_names IS NULL
                            OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                        )
                        -- skip paused keys, expired leases included: a pause
                        -- stops the runs, and an item's budget is not spent
                        AND (
                            NOT v_paused
                            OR NOT EXISTS (
                                SELECT 1 FROM _retryq_pause AS z
                                WHERE (z.event_type IS NULL OR z.event_type = a.event_type)
                                    AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
                            )
                        )
                        -- skip keys whose circuit is not closed
                        AND (
                            NOT v_gated
                            OR v_probe_event IS NOT NULL
                            OR NOT EXISTS (
                                SELECT 1 FROM _retryq_circuit AS c
                                WHERE c.state <> 'closed'
                                    AND c.event_type = a.event_type
                                    AND c.plugin_name = coalesce(a.plugin_name, '')
                            )
                        )
                        -- skip keys whose rate limit has no token free (a spent
                        -- lease is buried all the same: that takes no token)
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
                    ORDER BY a.next_retry_at, a.id
                    LIMIT v_asked
                    -- SKIP LOCKED: concurrent workers split the due items between
                    -- them instead of queueing behind each other's row locks.
                    FOR UPDATE SKIP LOCKED
                ),
                -- Rate limits: a lease (a takeover too) needs a token of its key;
                -- a locked item that got none stays as it is (its row lock ends
                -- with this transaction). A spent lease is buried, not leased.
                picked AS MATERIALIZED (
                    SELECT l.id, l.event_type, l.plugin_name, l.expired, l.spent
                    FROM locked AS l
                    WHERE NOT v_limited
                        OR l.spent
                        OR l.id = ANY((
                            SELECT _retryq_rate_grant(
                                pg_catalog.array_agg(g.id ORDER BY g.next_retry_at, g.id),
                                pg_catalog.array_agg(g.event_type ORDER BY g.next_retry_at, g.id),
                                pg_catalog.array_agg(g.plugin_name ORDER BY g.next_retry_at, g.id),
                                p_now
                            )
                            FROM locked AS g
                            WHERE NOT g.spent
                        )::bigint[])
                ),
                buried AS (
                    SELECT
                        pg_catalog.set_config('retryq.buried', 'yes', TRUE),
                        _retryq_bury(
                            pg_catalog.array_agg(p.id),
                            pg_catalog.jsonb_build_object(
                                'failed_at', p_now,
                                'error',
                                'lease expired: the worker did not finish in time',
                                'code', 'lease_expired',
                                'retryable', TRUE
                            ),
                            p_now
                        )
                    FROM picked AS p
                    WHERE p.spent
                    HAVING pg_catalog.count(*) > 0
                ),
                -- lost leases count against their circuits (the probe pass keeps
                -- its own books in probed)
                -- retryq.took_over: this transaction now holds rows whose former
                -- holders may wait for it, so it must never wait for an item row
                -- again (lock order: see _retryq_circuit_lock)
                expired AS (
                    SELECT
                        pg_catalog.set_config('retryq.took_over', 'yes', TRUE),
                        CASE WHEN v_probe_event IS NULL THEN _retryq_circuit_expired(
                            pg_catalog.array_agg(p.event_type), pg_catalog.array_agg(p.plugin_name), p_now
                        ) END
                    FROM picked AS p
                    WHERE p.expired
                    HAVING pg_catalog.count(*) > 0
                ),
                taken AS (
                    UPDATE _retryq_active AS a
                    SET
                        status = 'processing',
                        locked_by = p_worker_id,
                        locked_until = v_until,
                        last_attempted_at = p_now,
                        retry_count = a.retry_count + (a.status = 'processing')::integer,
                        error_message = CASE
                            WHEN a.status = 'processing'
                                THEN 'lease expired: the worker did not finish in time'
                            ELSE a.error_message
                        END,
                        last_error_code = CASE
                            WHEN a.status = 'processing' THEN 'lease_expired'
                            ELSE a.last_error_code
                        END,
                        error_history = CASE
                            WHEN a.status = 'processing'
                                THEN _retryq_history_add(
                                a.error_history,
                                pg_catalog.jsonb_build_object(
                                    'failed_at', a.locked_until,
                                    'worker_id', a.locked_by,
                                    'error',
                                    'lease expired: the worker did not finish in time',
                                    'code', 'lease_expired',
                                    'retryable', TRUE
                                )
                            )
                            ELSE a.error_history
                        END
                    -- by primary key: a join with picked gets a hash join over the
                    -- whole partition in the generic plan (LIMIT's estimate is a
                    -- guess); a picked row that is processing is an expired lease
                    WHERE a.id = ANY(
                        ARRAY(SELECT p.id FROM picked AS p WHERE NOT p.spent)
                    )
                        -- spent is judged again on the version this updates: an
                        -- expired lease whose budget is gone is never taken over
                        -- (seen once under load in the deadlock hunt: the row
                        -- reached retry_count > max_retries); the next acquire
                        -- buries it
                        AND (a.status = 'pending' OR a.retry_count < a.max_retries)
                    RETURNING a.*
                ),
                -- a data-modifying CTE always runs: in a probe pass it marks the
                -- circuit half_open with its probe item
                probed AS (
                    UPDATE _retryq_circuit AS c
                    SET
                        state = CASE
                            WHEN s.probe_id IS NULL THEN c.state ELSE 'half_open'
                        END,
                        open_until = CASE
                            WHEN s.probe_id IS NULL THEN c.open_until
                        END,
                        probe_id = coalesce(s.probe_id, c.probe_id),
                        next_probe_at = NULL,
                        lease_expiries = c.lease_expiries + s.expired_count
                    FROM (
                        SELECT
                            (SELECT pg_catalog.min(t.id) FROM taken AS t) AS probe_id,
                            (SELECT pg_catalog.count(*) FROM picked AS p WHERE p.expired)
                                AS expired_count
                    ) AS s
                    WHERE v_probe_event IS NOT NULL
                        AND c.event_type = v_probe_event
                        AND c.plugin_name = v_probe_plugin
                        AND (s.probe_id IS NOT NULL OR s.expired_count > 0)
                )
                SELECT
                    t.id, t.event_id, t.event_type,
                    coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
                    t.event_data, t.retry_count, t.max_retries, t.priority,
                    coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
                    t.created_at, t.next_retry_at, t.locked_until, t.error_message,
                    t.last_error_code
                FROM taken AS t
                -- a plain CTE runs only when referenced: these one-time filters
                -- make buried and expired run, before taken returns its rows
                WHERE (SELECT pg_catalog.count(*) FROM buried) >= 0
                    AND (SELECT pg_catalog.count(*) FROM expired) >= 0
                ORDER BY t.next_retry_at, t.id;
            ELSE
                -- Routed (see the header): the walk goes over each listed
                -- type's own range of _retryq_active_routed_idx (event_type,
                -- priority, next_retry_at, id), so another type's backlog is
                -- never read. The generic plan cannot turn the unrouted
                -- statement's `p_event_types IS NULL OR ...` into an index
                -- condition, hence statements of their own. First the
                -- candidates: the v_asked most urgent of the listed types
                -- (each range ordered, merged by due time and id), without
                -- locks; then the statement below locks them by primary key,
                -- SKIP LOCKED, and checks every condition again. Candidates
                -- another worker holds are skipped, and the walk goes on
                -- after the last candidate (v_after_at, v_after_id) instead
                -- of past them in one scan as the unrouted statement does.
                IF v_after_priority IS DISTINCT FROM v_priority THEN
                    v_after_priority := v_priority;
                    v_after_at := '-infinity';
                    v_after_id := 0;
                END IF;
                SELECT
                    coalesce(pg_catalog.array_agg(n.id ORDER BY n.next_retry_at, n.id), '{}'),
                    pg_catalog.array_agg(n.next_retry_at ORDER BY n.next_retry_at, n.id),
                    pg_catalog.count(*),
                    coalesce(pg_catalog.bool_or(n.status = 'processing'), FALSE)
                INTO v_ids, v_ats, v_found, v_expired
                FROM (
                    SELECT c.id, c.next_retry_at, c.status
                    FROM (
                        SELECT DISTINCT r.event_type
                        FROM pg_catalog.unnest(p_event_types) AS r (event_type)
                        WHERE v_probe_event IS NULL OR r.event_type = v_probe_event
                    ) AS r
                    CROSS JOIN LATERAL (
                        SELECT a.id, a.next_retry_at, a.status
                        FROM _retryq_active AS a
                        WHERE a.event_type = r.event_type
                            AND a.priority = v_priority
                            AND a.next_retry_at <= p_now
                            AND (a.next_retry_at, a.id) > (v_after_at, v_after_id)
                            AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                            AND (
                                v_probe_event IS NULL
                                OR coalesce(a.plugin_name, '') = v_probe_plugin
                            )
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
                                NOT v_gated
                                OR v_probe_event IS NOT NULL
                                OR NOT EXISTS (
                                    SELECT 1 FROM _retryq_circuit AS c
                                    WHERE c.state <> 'closed'
                                        AND c.event_type = a.event_type
                                        AND c.plugin_name = coalesce(a.plugin_name, '')
                                )
                            )
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
                        ORDER BY a.next_retry_at, a.id
                        LIMIT v_asked
                    ) AS c
                    ORDER BY c.next_retry_at, c.id
                    LIMIT v_asked
                ) AS n;
                IF v_found = 0 THEN
                    v_priority := v_priority - 1;
                    CONTINUE;
                END IF;
                v_after_at := v_ats[v_found];
                v_after_id := v_ids[v_found];
                IF NOT v_gated AND NOT v_paused AND NOT v_limited
                    AND v_probe_event IS NULL AND NOT v_expired THEN
                    -- The usual case, as in the lighter statement above: no
                    -- circuit, pause or rate limit to heed and no expired
                    -- lease among the candidates. A candidate that another
                    -- worker leased meanwhile is left alone (status).
                    RETURN QUERY
                    WITH picked AS MATERIALIZED (
                        SELECT a.id
                        FROM _retryq_active AS a
                        WHERE a.id = ANY(v_ids)
                            AND a.status = 'pending'
                            AND a.priority = v_priority
                            AND a.next_retry_at <= p_now
                            AND a.event_type = ANY(p_event_types)
                            AND (
                                p_plugin_names IS NULL
                                OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                            )
                        ORDER BY a.next_retry_at, a.id
                        LIMIT v_asked
                        FOR UPDATE SKIP LOCKED
                    ),
                    taken AS (
                        UPDATE _retryq_active AS a
                        SET
                            status = 'processing',
                            locked_by = p_worker_id,
                            locked_until = v_until,
                            last_attempted_at = p_now
                        WHERE a.id = ANY(ARRAY(SELECT p.id FROM picked AS p))
                        RETURNING a.*
                    )
                    SELECT
                        t.id, t.event_id, t.event_type,
                        coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
                        t.event_data, t.retry_count, t.max_retries, t.priority,
                        coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
                        t.created_at, t.next_retry_at, t.locked_until,
                        t.error_message, t.last_error_code
                    FROM taken AS t
                    ORDER BY t.next_retry_at, t.id;
                ELSE
                    RETURN QUERY
                    WITH locked AS MATERIALIZED (
                        SELECT
                            a.id,
                            a.event_type,
                            a.plugin_name,
                            a.next_retry_at,
                            a.status = 'processing' AS expired,
                            a.status = 'processing' AND a.retry_count >= a.max_retries
                                AS spent
                        FROM _retryq_active AS a
                        -- the candidates, by primary key; every condition again,
                        -- on the version this locks
                        WHERE a.id = ANY(v_ids)
                            AND a.priority = v_priority
                            AND a.next_retry_at <= p_now
                            AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                            AND (
                                v_probe_event IS NULL
                                OR (
                                    a.event_type = v_probe_event
                                    AND coalesce(a.plugin_name, '') = v_probe_plugin
                                )
                            )
                            AND a.event_type = ANY(p_event_types)
                            AND (
                                p_plugin_names IS NULL
                                OR coalesce(a.plugin_name, '') = ANY(p_plugin_names)
                            )
                            -- skip paused keys, expired leases included: a pause
                            -- stops the runs, and an item's budget is not spent
                            AND (
                                NOT v_paused
                                OR NOT EXISTS (
                                    SELECT 1 FROM _retryq_pause AS z
                                    WHERE (z.event_type IS NULL OR z.event_type = a.event_type)
                                        AND (z.plugin_name IS NULL OR z.plugin_name = coalesce(a.plugin_name, ''))
                                )
                            )
                            -- skip keys whose circuit is not closed
                            AND (
                                NOT v_gated
                                OR v_probe_event IS NOT NULL
                                OR NOT EXISTS (
                                    SELECT 1 FROM _retryq_circuit AS c
                                    WHERE c.state <> 'closed'
                                        AND c.event_type = a.event_type
                                        AND c.plugin_name = coalesce(a.plugin_name, '')
                                )
                            )
                            -- skip keys whose rate limit has no token free (a spent
                            -- lease is buried all the same: that takes no token)
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
                        ORDER BY a.next_retry_at, a.id
                        LIMIT v_asked
                        -- SKIP LOCKED: concurrent workers split the due items between
                        -- them instead of queueing behind each other's row locks.
                        FOR UPDATE SKIP LOCKED
                    ),
                    -- Rate limits: a lease (a takeover too) needs a token of its key;
                    -- a locked item that got none stays as it is (its row lock ends
                    -- with this transaction). A spent lease is buried, not leased.
                    picked AS MATERIALIZED (
                        SELECT l.id, l.event_type, l.plugin_name, l.expired, l.spent
                        FROM locked AS l
                        WHERE NOT v_limited
                            OR l.spent
                            OR l.id = ANY((
                                SELECT _retryq_rate_grant(
                                    pg_catalog.array_agg(g.id ORDER BY g.next_retry_at, g.id),
                                    pg_catalog.array_agg(g.event_type ORDER BY g.next_retry_at, g.id),
                                    pg_catalog.array_agg(g.plugin_name ORDER BY g.next_retry_at, g.id),
                                    p_now
                                )
                                FROM locked AS g
                                WHERE NOT g.spent
                            )::bigint[])
                    ),
                    buried AS (
                        SELECT
                            pg_catalog.set_config('retryq.buried', 'yes', TRUE),
                            _retryq_bury(
                                pg_catalog.array_agg(p.id),
                                pg_catalog.jsonb_build_object(
                                    'failed_at', p_now,
                                    'error',
                                    'lease expired: the worker did not finish in time',
                                    'code', 'lease_expired',
                                    'retryable', TRUE
                                ),
                                p_now
                            )
                        FROM picked AS p
                        WHERE p.spent
                        HAVING pg_catalog.count(*) > 0
                    ),
                    -- lost leases count against their circuits (the probe pass keeps
                    -- its own books in probed)
                    -- retryq.took_over: this transaction now holds rows whose former
                    -- holders may wait for it, so it must never wait for an item row
                    -- again (lock order: see _retryq_circuit_lock)
                    expired AS (
                        SELECT
                            pg_catalog.set_config('retryq.took_over', 'yes', TRUE),
                            CASE WHEN v_probe_event IS NULL THEN _retryq_circuit_expired(
                                pg_catalog.array_agg(p.event_type), pg_catalog.array_agg(p.plugin_name), p_now
                            ) END
                        FROM picked AS p
                        WHERE p.expired
                        HAVING pg_catalog.count(*) > 0
                    ),
                    taken AS (
                        UPDATE _retryq_active AS a
                        SET
                            status = 'processing',
                            locked_by = p_worker_id,
                            locked_until = v_until,
                            last_attempted_at = p_now,
                            retry_count = a.retry_count + (a.status = 'processing')::integer,
                            error_message = CASE
                                WHEN a.status = 'processing'
                                    THEN 'lease expired: the worker did not finish in time'
                                ELSE a.error_message
                            END,
                            last_error_code = CASE
                                WHEN a.status = 'processing' THEN 'lease_expired'
                                ELSE a.last_error_code
                            END,
                            error_history = CASE
                                WHEN a.status = 'processing'
                                    THEN _retryq_history_add(
                                    a.error_history,
                                    pg_catalog.jsonb_build_object(
                                        'failed_at', a.locked_until,
                                        'worker_id', a.locked_by,
                                        'error',
                                        'lease expired: the worker did not finish in time',
                                        'code', 'lease_expired',
                                        'retryable', TRUE
                                    )
                                )
                                ELSE a.error_history
                            END
                        -- by primary key: a join with picked gets a hash join over the
                        -- whole partition in the generic plan (LIMIT's estimate is a
                        -- guess); a picked row that is processing is an expired lease
                        WHERE a.id = ANY(
                            ARRAY(SELECT p.id FROM picked AS p WHERE NOT p.spent)
                        )
                            -- spent is judged again on the version this updates: an
                            -- expired lease whose budget is gone is never taken over
                            -- (seen once under load in the deadlock hunt: the row
                            -- reached retry_count > max_retries); the next acquire
                            -- buries it
                            AND (a.status = 'pending' OR a.retry_count < a.max_retries)
                        RETURNING a.*
                    ),
                    -- a data-modifying CTE always runs: in a probe pass it marks the
                    -- circuit half_open with its probe item
                    probed AS (
                        UPDATE _retryq_circuit AS c
                        SET
                            state = CASE
                                WHEN s.probe_id IS NULL THEN c.state ELSE 'half_open'
                            END,
                            open_until = CASE
                                WHEN s.probe_id IS NULL THEN c.open_until
                            END,
                            probe_id = coalesce(s.probe_id, c.probe_id),
                            next_probe_at = NULL,
                            lease_expiries = c.lease_expiries + s.expired_count
                        FROM (
                            SELECT
                                (SELECT pg_catalog.min(t.id) FROM taken AS t) AS probe_id,
                                (SELECT pg_catalog.count(*) FROM picked AS p WHERE p.expired)
                                    AS expired_count
                        ) AS s
                        WHERE v_probe_event IS NOT NULL
                            AND c.event_type = v_probe_event
                            AND c.plugin_name = v_probe_plugin
                            AND (s.probe_id IS NOT NULL OR s.expired_count > 0)
                    )
                    SELECT
                        t.id, t.event_id, t.event_type,
                        coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
                        t.event_data, t.retry_count, t.max_retries, t.priority,
                        coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
                        t.created_at, t.next_retry_at, t.locked_until, t.error_message,
                        t.last_error_code
                    FROM taken AS t
                    -- a plain CTE runs only when referenced: these one-time filters
                    -- make buried and expired run, before taken returns its rows
                    WHERE (SELECT pg_catalog.count(*) FROM buried) >= 0
                        AND (SELECT pg_catalog.count(*) FROM expired) >= 0
                    ORDER BY t.next_retry_at, t.id;
                END IF;
            END IF;
            GET DIAGNOSTICS v_taken = ROW_COUNT;
            v_remaining := v_remaining - v_taken;
            v_probed := v_probe_event IS NOT NULL AND v_taken > 0;
            -- Spent leases that this scan buried used up slots of its LIMIT:
            -- scan the same priority again rather than hand out a less urgent
            -- item.
            IF v_taken < v_asked
                AND pg_catalog.current_setting('retryq.buried', TRUE) = 'yes' THEN
                PERFORM pg_catalog.set_config('retryq.buried', '', TRUE);
                CONTINUE;
            END IF;
            -- Rate limits: items of a key whose tokens ran out in this scan
            -- (its grant came back short) used up slots of its LIMIT too.
            -- When keys closed, scan the same priority again without them
            -- (at most once per limited key: the closed keys only grow).
            IF v_limited AND v_taken < v_asked
                AND pg_catalog.current_setting('retryq.rate_short', TRUE) = 'yes' THEN
                PERFORM pg_catalog.set_config('retryq.rate_short', '', TRUE);
                v_closed_count := pg_catalog.cardinality(v_closed_events);
                SELECT
                    coalesce(pg_catalog.array_agg(l.event_type), '{}'),
                    coalesce(pg_catalog.array_agg(l.plugin_name), '{}')
                INTO v_closed_events, v_closed_plugins
                FROM _retryq_rate_limit AS l
                WHERE NOT EXISTS (
                    SELECT 1 FROM _retryq_rate_token AS t
                    WHERE t.event_type = l.event_type
                        AND t.plugin_name = l.plugin_name
                        AND (
                            t.used_at <= p_now - l.period
                            OR t.used < t.cap AND t.prev_used_at <= p_now - l.period
                        )
                )
                    OR EXISTS (
                        SELECT 1
                        FROM ROWS FROM (
                            pg_catalog.unnest(v_closed_events),
                            pg_catalog.unnest(v_closed_plugins)
                        ) AS k (event_type, plugin_name)
                        WHERE k.event_type = l.event_type
                            AND k.plugin_name = l.plugin_name
                    );
                CONTINUE WHEN pg_catalog.cardinality(v_closed_events) > v_closed_count;
            END IF;
            -- Routed: candidates held by other workers were skipped; when
            -- the candidates filled the window, the walk goes on after them.
            CONTINUE WHEN p_event_types IS NOT NULL
                AND v_taken < v_asked AND v_found = v_asked AND NOT v_probed;
            v_priority := v_priority - 1;
        END LOOP;
        IF v_probe_event IS NOT NULL AND NOT v_probed THEN
            -- Nothing of this key is due: look again in a few seconds rather
            -- than walk the due items on every call.
            UPDATE _retryq_circuit AS c
            SET next_probe_at = p_now + interval '5 seconds'
            WHERE c.event_type = v_probe_event
                AND c.plugin_name = v_probe_plugin;
        END IF;
    END LOOP;
    -- the hint for this session's next acquire (see above); written only
    -- when it changes
    IF v_limited THEN
        v_hint := CASE
            WHEN pg_catalog.cardinality(v_closed_events) = 0 THEN 'no' ELSE 'yes'
        END;
        IF pg_catalog.current_setting('retryq.rate_closed', TRUE) IS DISTINCT FROM v_hint THEN
            PERFORM pg_catalog.set_config('retryq.rate_closed', v_hint, FALSE);
        END IF;
    END IF;
END;
$$;

REVOKE EXECUTE ON FUNCTION acquire_retry_items FROM public;
GRANT EXECUTE ON FUNCTION acquire_retry_items TO retryq_worker;
