-- Puts a leased item back to pending, due p_delay_seconds from now, without
-- spending an attempt and without recording a failure: retry_count,
-- error_message, last_error_code and error_history stay as they were, and the
-- item's circuit is not told. For a handler that is not ready yet (a resource
-- still being prepared, a window not yet open), not one that failed.
-- Bounded: the item's snoozes are counted in event_metadata.retryq_snoozes
-- (a number, carried into the finished row and reset by a requeue). The
-- snooze after p_max_snoozes of them makes the item a dead letter with code
-- snooze_limit instead, so that an item snoozed forever ends where an
-- operator looks. True when p_worker_id held the lease (the item was snoozed,
-- or dead-lettered at the bound); false when it did not (a wrong id or
-- worker, a lease taken over, a second call), as complete and fail answer.
-- Refuses (22023, naming the field) a blank worker id, a delay outside 0 to
-- 31536000 seconds, and p_max_snoozes outside 0 to 10000.
-- p_leased_at: the lease fence (see complete_retry_item).
CREATE OR REPLACE FUNCTION snooze_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_delay_seconds double precision,
    p_max_snoozes bigint DEFAULT 100,
    p_now timestamptz DEFAULT now(),
    p_leased_at timestamptz DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_metadata jsonb;
    v_snoozes numeric;
    v_due timestamptz;
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check_worker(p_worker_id);
    -- NaN and the infinities fail BETWEEN too
    PERFORM _retryq_check(
        p_delay_seconds BETWEEN 0::float8 AND 31536000::float8,
        'delay_seconds', 'must be between 0 and 31536000 seconds'
    );
    PERFORM _retryq_check(
        p_max_snoozes BETWEEN 0 AND 10000,
        'max_snoozes', 'must be between 0 and 10000'
    );
    IF pg_catalog.current_setting('retryq.took_over', TRUE) = 'yes' THEN
        -- this transaction took over leases: it must not wait for an item
        -- (lock order: see _retryq_circuit_lock)
        SELECT a.event_metadata INTO v_metadata
        FROM _retryq_active AS a
        WHERE a.id = p_item_id
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
            AND (p_leased_at IS NULL OR a.last_attempted_at = p_leased_at)
        FOR UPDATE SKIP LOCKED;
    ELSE
        SELECT a.event_metadata INTO v_metadata
        FROM _retryq_active AS a
        WHERE a.id = p_item_id
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
            AND (p_leased_at IS NULL OR a.last_attempted_at = p_leased_at)
        FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;

    -- a producer may have written anything under the key: a count only if a
    -- whole number at least 0, else none yet
    v_snoozes := CASE
        WHEN pg_catalog.jsonb_typeof(v_metadata -> 'retryq_snoozes'::text) = 'number'
            THEN pg_catalog.floor((v_metadata ->> 'retryq_snoozes'::text)::numeric)
    END;
    IF v_snoozes IS NULL OR v_snoozes < 0::numeric THEN
        v_snoozes := 0::numeric;
    END IF;
    IF v_snoozes >= p_max_snoozes::numeric THEN
        PERFORM _retryq_bury(
            ARRAY[p_item_id],
            pg_catalog.jsonb_build_object(
                'failed_at', p_now,
                'worker_id', p_worker_id,
                'error', pg_catalog.format(
                    'retryq: snoozed %s times, the limit (max_snoozes %s)',
                    v_snoozes, p_max_snoozes
                ),
                'code', 'snooze_limit',
                'retryable', FALSE
            ),
            p_now
        );
        RETURN TRUE;
    END IF;

    v_due := p_now + pg_catalog.make_interval(secs => p_delay_seconds);
    UPDATE _retryq_active AS a
    SET
        status = 'pending',
        next_retry_at = v_due,
        event_metadata = a.event_metadata
        || pg_catalog.jsonb_build_object('retryq_snoozes', v_snoozes + 1::numeric),
        locked_by = NULL,
        locked_until = NULL
    WHERE a.id = p_item_id;
    IF v_due <= p_now THEN
        PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'retry');
    END IF;
    RETURN TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION snooze_retry_item FROM public;
GRANT EXECUTE ON FUNCTION snooze_retry_item TO retryq_worker;
