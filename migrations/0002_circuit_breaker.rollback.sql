-- Removes what 0002_circuit_breaker added and puts back 0001's bodies of
-- acquire_retry_items, complete_retry_item, complete_retry_items and
-- fail_retry_item.

-- Leases up to p_batch_size due items to p_worker_id for
-- p_lock_timeout_seconds, most urgent first (priority descending, then due
-- time, then id). A lease that expired belongs to a worker that died or hung:
-- any worker takes it over, and the lost attempt counts against the item's
-- retry budget, so an item that kills every worker ends as a dead letter
-- instead of looping forever.
CREATE OR REPLACE FUNCTION acquire_retry_items(
    p_worker_id text,
    p_batch_size integer DEFAULT 10,
    p_lock_timeout_seconds integer DEFAULT 300,
    p_now timestamptz DEFAULT now()
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
AS $$
#variable_conflict use_column
DECLARE
    v_remaining integer := p_batch_size;
    v_taken integer;
    v_asked integer;
    v_priority integer := 10;
    v_until timestamptz;
BEGIN
    PERFORM _retryq_check_worker(p_worker_id);
    PERFORM _retryq_check(
        p_batch_size BETWEEN 1 AND 1000,
        'batch_size', 'must be between 1 and 1000'
    );
    PERFORM _retryq_check(
        p_lock_timeout_seconds BETWEEN 1 AND 86400,
        'lock_timeout_seconds', 'must be between 1 and 86400'
    );
    v_until := p_now + make_interval(secs => p_lock_timeout_seconds);

    -- One index range scan per priority, from most to least urgent: each stops
    -- at the first item not yet due, so items scheduled far ahead are never
    -- walked. Leased items keep their due time (so a lease is a HOT update);
    -- the scan filters out the unexpired ones.
    WHILE v_priority >= 1 AND v_remaining > 0 LOOP
        -- A priority with nothing due is skipped after one index probe,
        -- instead of planning and running the statement below for it.
        PERFORM FROM _retryq_active AS a
        WHERE a.priority = v_priority
            AND a.next_retry_at <= p_now
            AND (a.locked_until IS NULL OR a.locked_until <= p_now)
        ORDER BY a.next_retry_at, a.id
        LIMIT 1;
        IF NOT FOUND THEN
            v_priority := v_priority - 1;
            CONTINUE;
        END IF;
        v_asked := v_remaining;
        RETURN QUERY
        WITH picked AS (
            SELECT
                a.id,
                a.status = 'processing' AS expired,
                a.status = 'processing' AND a.retry_count >= a.max_retries
                    AS spent
            FROM _retryq_active AS a
            WHERE a.priority = v_priority
                AND a.next_retry_at <= p_now
                AND (a.locked_until IS NULL OR a.locked_until <= p_now)
            ORDER BY a.next_retry_at, a.id
            LIMIT v_remaining
            -- SKIP LOCKED: concurrent workers split the due items between them
            -- instead of queueing behind each other's row locks.
            FOR UPDATE SKIP LOCKED
        ),
        buried AS (
            SELECT
                set_config('retryq.buried', 'yes', TRUE),
                _retryq_bury(
                    array_agg(p.id),
                    jsonb_build_object(
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
            HAVING count(*) > 0
        ),
        taken AS (
            UPDATE _retryq_active AS a
            SET
                status = 'processing',
                locked_by = p_worker_id,
                locked_until = v_until,
                last_attempted_at = p_now,
                retry_count = a.retry_count + p.expired::integer,
                error_message = CASE
                    WHEN p.expired
                        THEN 'lease expired: the worker did not finish in time'
                    ELSE a.error_message
                END,
                last_error_code = CASE
                    WHEN p.expired THEN 'lease_expired' ELSE a.last_error_code
                END,
                error_history = CASE
                    WHEN p.expired THEN a.error_history || jsonb_build_array(
                        jsonb_build_object(
                            'attempt', jsonb_array_length(a.error_history) + 1,
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
            FROM picked AS p
            WHERE a.id = p.id AND NOT p.spent
            RETURNING a.*
        )
        SELECT
            t.id, t.event_id, t.event_type,
            coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
            t.event_data, t.retry_count, t.max_retries, t.priority,
            coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
            t.created_at, t.next_retry_at, t.locked_until, t.error_message,
            t.last_error_code
        FROM taken AS t
        -- a plain CTE runs only when referenced: this one-time filter makes
        -- buried run, before taken returns its rows
        WHERE (SELECT count(*) FROM buried) >= 0
        ORDER BY t.next_retry_at, t.id;
        GET DIAGNOSTICS v_taken = ROW_COUNT;
        v_remaining := v_remaining - v_taken;
        -- Spent leases that this scan buried used up slots of its LIMIT: scan
        -- the same priority again rather than hand out a less urgent item.
        IF v_taken < v_asked AND current_setting('retryq.buried', TRUE) = 'yes' THEN
            PERFORM set_config('retryq.buried', '', TRUE);
        ELSE
            v_priority := v_priority - 1;
        END IF;
    END LOOP;
END;
$$;

-- Marks an item done. True only for the worker holding the lease; false for
-- any other worker, after a takeover, and on a second call.
CREATE OR REPLACE FUNCTION complete_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
-- Generic plans: a custom plan per call (the plan cache's default here) cost
-- more than the statement; the generic plan is the same key lookup at any
-- size. Not acquire_retry_items: its generic plan guesses a LIMIT of a tenth
-- of the table and leases by a sequential scan (250+ ms at 1M items).
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN complete_retry_items(ARRAY[p_item_id], p_worker_id, p_now) = 1;
END;
$$;

-- Marks many items done in one statement; returns how many it completed. Ids
-- not leased to p_worker_id are skipped.
CREATE OR REPLACE FUNCTION complete_retry_items(
    p_item_ids bigint[],
    p_worker_id text,
    p_now timestamptz DEFAULT now()
)
RETURNS integer
LANGUAGE plpgsql
-- generic plans: see complete_retry_item
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM _retryq_check(
        p_item_ids IS NOT NULL, 'item_ids', 'must not be null'
    );
    PERFORM _retryq_check_worker(p_worker_id);
    WITH gone AS (
        DELETE FROM _retryq_active AS a
        WHERE a.id = ANY(p_item_ids)
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
        RETURNING a.*
    )
    INSERT INTO _retryq_finished (
        id, event_id, event_type, channel_name, plugin_name, event_data,
        event_metadata, retry_count, max_retries, retry_delay_seconds,
        backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
        correlation_id, tags, status, error_message, last_error_code,
        error_history, created_at, next_retry_at, last_attempted_at,
        completed_at, dead_lettered_at, locked_by, locked_until
    )
    SELECT
        g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name,
        g.event_data, g.event_metadata, g.retry_count, g.max_retries,
        g.retry_delay_seconds, g.backoff_multiplier, g.max_retry_delay_seconds,
        g.retry_jitter, g.priority, g.correlation_id, g.tags, 'completed',
        g.error_message, g.last_error_code, g.error_history, g.created_at,
        g.next_retry_at, g.last_attempted_at, p_now, NULL, NULL, NULL
    FROM gone AS g;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

-- Records a failed attempt. While the retry budget lasts the item goes back to
-- pending, due after the backoff; the failure of attempt max_retries + 1, or
-- any failure with p_retryable false, makes it a dead letter. False when
-- p_worker_id does not hold the lease.
CREATE OR REPLACE FUNCTION fail_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_error_msg text,
    p_error_code text DEFAULT NULL,
    p_retryable boolean DEFAULT TRUE,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    v_item _retryq_active%ROWTYPE;
    v_entry jsonb;
    v_due timestamptz;
BEGIN
    PERFORM _retryq_check_worker(p_worker_id);
    PERFORM _retryq_check(
        p_error_msg IS NOT NULL, 'error_msg', 'must not be null'
    );
    PERFORM _retryq_check(
        p_retryable IS NOT NULL, 'retryable', 'must not be null'
    );
    SELECT a.* INTO v_item
    FROM _retryq_active AS a
    WHERE a.id = p_item_id
        AND a.status = 'processing'
        AND a.locked_by = p_worker_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;

    v_entry := jsonb_build_object(
        'failed_at', p_now,
        'worker_id', p_worker_id,
        'error', p_error_msg,
        'code', p_error_code,
        'retryable', p_retryable
    );
    IF NOT p_retryable OR v_item.retry_count >= v_item.max_retries THEN
        PERFORM _retryq_bury(ARRAY[p_item_id], v_entry, p_now);
        RETURN TRUE;
    END IF;

    v_due := p_now + _retryq_backoff(
        v_item.retry_count + 1,
        v_item.retry_delay_seconds,
        v_item.backoff_multiplier,
        v_item.max_retry_delay_seconds,
        v_item.retry_jitter
    );
    UPDATE _retryq_active AS a
    SET
        status = 'pending',
        retry_count = a.retry_count + 1,
        next_retry_at = v_due,
        error_message = p_error_msg,
        last_error_code = p_error_code,
        error_history = a.error_history || jsonb_build_array(
            v_entry || jsonb_build_object(
                'attempt', jsonb_array_length(a.error_history) + 1
            )
        ),
        locked_by = NULL,
        locked_until = NULL
    WHERE a.id = p_item_id;
    IF v_due <= p_now THEN
        PERFORM pg_notify(retry_queue_channel(), 'retry');
    END IF;
    RETURN TRUE;
END;
$$;

DROP VIEW daz_retry_queue_circuits;
DROP FUNCTION retry_circuit_configure(
    text, text, integer, double precision, double precision, boolean,
    timestamptz
);
DROP FUNCTION retry_circuit_close(text, text, timestamptz);
DROP FUNCTION retry_circuit_open(text, text, double precision, timestamptz);
DROP FUNCTION _retryq_check_circuit_key(text);
DROP FUNCTION _retryq_circuit_succeeded(text[], text[], timestamptz);
DROP FUNCTION _retryq_circuit_expired(text[], text[], timestamptz);
DROP FUNCTION _retryq_circuit_failed(
    text, text, integer, integer, boolean, timestamptz
);
DROP FUNCTION _retryq_circuit_cooldown(integer, double precision, double precision);
DROP TABLE _retryq_circuit;
DROP TABLE _retryq_circuit_defaults;

-- CREATE OR REPLACE dropped the restored functions' SET search_path.
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure
        FROM pg_proc AS p
        WHERE p.pronamespace = (
            SELECT n.oid FROM pg_namespace AS n WHERE n.nspname = current_schema()
        )
            AND p.proname IN (
                'acquire_retry_items', 'complete_retry_item', 'complete_retry_items',
                'fail_retry_item'
            )
    LOOP
        EXECUTE format(
            'ALTER FUNCTION %s SET search_path = %I, pg_temp',
            v_fn, current_schema()
        );
    END LOOP;
END;
$$;
