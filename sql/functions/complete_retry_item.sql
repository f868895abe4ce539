-- Marks an item done. True only for the worker holding the lease; false for
-- any other worker, after a takeover, and on a second call.
-- p_leased_at, when given, fences the call to one lease: it applies only
-- while the item's lease is the one granted at p_leased_at (the row's
-- last_attempted_at, which acquire_retry_items stamps at each grant: its
-- locked_until minus its p_lock_timeout_seconds), compared to the
-- millisecond (both truncated): drivers that keep milliseconds only, such as
-- node-postgres's JS Date, send the grant time back truncated; two grants to
-- one worker within one millisecond are not told apart. Without it, an
-- acknowledgement of a worker's older lease (its reply lost, the item
-- leased to the same worker again since) lands on the newer lease; with it,
-- the call answers false, as for a lease lost. NULL: any lease p_worker_id
-- holds, as before. complete_retry_items, fail_retry_item,
-- snooze_retry_item and extend_retry_lock take the same fence.
-- Its own body rather than a call to complete_retry_items: it runs once per
-- item on the per-item path, where the nested call and the array aggregation
-- cost a tenth of the statement.
CREATE OR REPLACE FUNCTION complete_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_now timestamptz DEFAULT now(),
    p_leased_at timestamptz DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
-- Generic plans: a custom plan per call (the plan cache's default here) cost
-- more than the statement; the generic plan is the same key lookup at any
-- size.
SET plan_cache_mode = force_generic_plan
-- No jit = off, unlike the other public functions: every statement here is a
-- key lookup under that generic plan, whose estimate does not grow with the
-- input, so JIT never starts; the setting would cost each call about 2,000
-- instructions (callgrind; tests/sql/test_install.py holds the rule).
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_event_type text;
    v_plugin_name text;
    v_streaks boolean;
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    IF pg_catalog.current_setting('retryq.took_over', TRUE) = 'yes' THEN
        -- this transaction took over leases: it must not wait for an item
        -- (lock order: see _retryq_circuit_lock)
        PERFORM 1 FROM _retryq_active AS a
        WHERE a.id = p_item_id
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
            AND (
                p_leased_at IS NULL
                OR pg_catalog.date_trunc('milliseconds', a.last_attempted_at)
                = pg_catalog.date_trunc('milliseconds', p_leased_at)
            )
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            IF (pg_catalog.ascii(p_worker_id) BETWEEN 33 AND 126
                AND pg_catalog.length(p_worker_id) <= 200) IS NOT TRUE THEN
                PERFORM _retryq_check_worker(p_worker_id);
            END IF;
            RETURN FALSE;
        END IF;
    END IF;
    WITH gone AS (
        DELETE FROM _retryq_active AS a
        WHERE a.id = p_item_id
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
            AND (
                p_leased_at IS NULL
                OR pg_catalog.date_trunc('milliseconds', a.last_attempted_at)
                = pg_catalog.date_trunc('milliseconds', p_leased_at)
            )
        RETURNING a.*
    )
    -- the move of _retryq_finish, inline: see there
    INSERT INTO _retryq_completed AS f (
        id, event_id, event_type, channel_name, plugin_name, event_data,
        event_metadata, retry_count, max_retries, retry_delay_seconds,
        backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
        correlation_id, tags, status, error_message, last_error_code,
        error_history, created_at, next_retry_at, last_attempted_at,
        completed_at, dead_lettered_at, locked_by, locked_until, dedupe_key
    )
    SELECT
        g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name,
        g.event_data, g.event_metadata, g.retry_count, g.max_retries,
        g.retry_delay_seconds, g.backoff_multiplier,
        g.max_retry_delay_seconds, g.retry_jitter, g.priority,
        g.correlation_id, g.tags, 'completed', g.error_message,
        g.last_error_code, g.error_history, g.created_at, g.next_retry_at,
        g.last_attempted_at, p_now, NULL, NULL, NULL, g.dedupe_key
    FROM gone AS g
    -- whether any key has a streak, asked in the same statement: a statement
    -- of its own cost the call a thirtieth
    RETURNING
        f.event_type,
        f.plugin_name,
        EXISTS (
            SELECT 1 FROM _retryq_circuit AS c
            WHERE c.state <> 'closed' OR c.consecutive_failures > 0
        )
    INTO v_event_type, v_plugin_name, v_streaks;
    IF NOT FOUND THEN
        -- The worker id is checked only here, where nothing was completed: a
        -- lease is held only under an id acquire_retry_items checked, so a bad
        -- id never matches, and a good one is not checked on every call (the
        -- check cost a completion 8,000 instructions, 2%, in its own
        -- transaction: each expression is set up anew in each).
        IF (pg_catalog.ascii(p_worker_id) BETWEEN 33 AND 126
            AND pg_catalog.length(p_worker_id) <= 200) IS NOT TRUE THEN
            PERFORM _retryq_check_worker(p_worker_id);
        END IF;
        RETURN FALSE;
    END IF;
    -- the same books as complete_retry_items, skipped while no key has a streak
    IF v_streaks THEN
        PERFORM _retryq_circuit_succeeded(
            ARRAY[v_event_type], ARRAY[v_plugin_name], p_now
        );
    END IF;
    RETURN TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION complete_retry_item FROM public;
GRANT EXECUTE ON FUNCTION complete_retry_item TO retryq_worker;
