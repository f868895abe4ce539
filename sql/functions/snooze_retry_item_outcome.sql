-- snooze_retry_item's work, saying what it did: 'snoozed' (the item is
-- pending again), 'dead_letter' (the snooze past p_max_snoozes made it a
-- dead letter with code snooze_limit), NULL when p_worker_id did not hold
-- the lease (a wrong id or worker, a lease taken over, a second call).
-- snooze_retry_item answers only whether the lease was held; a worker that
-- reports what happened calls this one.
-- The count is event_metadata.retryq_snoozes when it is a whole JSON number
-- from 0 to 10000, else 0: retryq writes only such counts (p_max_snoozes is
-- at most 10000, and the snooze at the bound buries the item), so any other
-- value under the key was written by someone else and says nothing about
-- this item's snoozes; it must not dead-letter an item never snoozed.
-- retryq_py's RetryQueueItem.snoozes reads the key by the same rule.
-- Refuses (22023, naming the field) what snooze_retry_item refuses.
-- p_leased_at: the lease fence (see complete_retry_item).
CREATE OR REPLACE FUNCTION snooze_retry_item_outcome(
    p_item_id bigint,
    p_worker_id text,
    p_delay_seconds double precision,
    p_max_snoozes bigint DEFAULT 100,
    p_now timestamptz DEFAULT now(),
    p_leased_at timestamptz DEFAULT NULL
)
RETURNS text
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
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_max_snoozes := coalesce(p_max_snoozes, 100);
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
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
            AND (
                p_leased_at IS NULL
                OR pg_catalog.date_trunc('milliseconds', a.last_attempted_at)
                = pg_catalog.date_trunc('milliseconds', p_leased_at)
            )
        FOR UPDATE SKIP LOCKED;
    ELSE
        SELECT a.event_metadata INTO v_metadata
        FROM _retryq_active AS a
        WHERE a.id = p_item_id
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
            AND (
                p_leased_at IS NULL
                OR pg_catalog.date_trunc('milliseconds', a.last_attempted_at)
                = pg_catalog.date_trunc('milliseconds', p_leased_at)
            )
        FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    -- a count only if retryq could have written it (see above), else none
    v_snoozes := CASE
        WHEN pg_catalog.jsonb_typeof(v_metadata -> 'retryq_snoozes'::text) = 'number'
            THEN (v_metadata ->> 'retryq_snoozes'::text)::numeric
    END;
    IF v_snoozes IS NULL
        OR NOT v_snoozes BETWEEN 0::numeric AND 10000::numeric
        OR v_snoozes <> pg_catalog.trunc(v_snoozes) THEN
        v_snoozes := 0::numeric;
    END IF;
    v_snoozes := pg_catalog.trunc(v_snoozes);  -- 5.0 counts, and is stored, as 5
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
        RETURN 'dead_letter';
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
    RETURN 'snoozed';
END;
$$;

REVOKE EXECUTE ON FUNCTION snooze_retry_item_outcome FROM public;
GRANT EXECUTE ON FUNCTION snooze_retry_item_outcome TO retryq_worker;
