-- Records a failed attempt. While the retry budget lasts the item goes back to
-- pending, due after the backoff; the failure of attempt max_retries + 1, or
-- any failure with p_retryable false, makes it a dead letter. False when
-- p_worker_id does not hold the lease.
-- A retryable failure counts against the item's circuit. A permanent one
-- (p_retryable false) does not: it says the item is bad, not that the
-- dependency is down, so it neither extends nor ends a failure streak.
-- p_retry_after_seconds, when given, replaces the backoff for this retry (a
-- handler that knows when to try again: an HTTP 429 or 503 with Retry-After).
-- It is still capped by the item's max_retry_delay_seconds, and no jitter
-- shortens it: a Retry-After is the earliest time the other side will
-- answer. The next retry without it backs off as usual, from the new count.
-- p_leased_at: the lease fence (see complete_retry_item).
CREATE OR REPLACE FUNCTION fail_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_error_msg text,
    p_error_code text DEFAULT NULL,
    p_retryable boolean DEFAULT TRUE,
    p_now timestamptz DEFAULT now(),
    p_retry_after_seconds double precision DEFAULT NULL,
    p_leased_at timestamptz DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_item _retryq_active%ROWTYPE;
    v_entry jsonb;
    v_due timestamptz;
BEGIN
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_retryable := coalesce(p_retryable, TRUE);
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check_worker(p_worker_id);
    PERFORM _retryq_check(
        p_error_msg IS NOT NULL, 'error_msg', 'must not be null'
    );
    PERFORM _retryq_check(
        p_retryable IS NOT NULL, 'retryable', 'must not be null'
    );
    -- NaN and the infinities fail BETWEEN too
    PERFORM _retryq_check(
        p_retry_after_seconds IS NULL OR p_retry_after_seconds BETWEEN 0::float8 AND 31536000::float8,
        'retry_after_seconds',
        'must be between 0 and 31536000 seconds, or null for the backoff'
    );
    IF pg_catalog.octet_length(p_error_msg) > 1000 THEN
        PERFORM _retryq_check_limit('error_msg', pg_catalog.length(p_error_msg));
    END IF;
    IF pg_catalog.octet_length(p_error_code) > 200 THEN
        PERFORM _retryq_check_limit('error_code', pg_catalog.length(p_error_code));
    END IF;
    -- Lock order (see _retryq_circuit_lock): the key's circuit row before the
    -- item, so that the wait for it, when there is one, happens while this
    -- transaction may still hold nothing. The key is read without a lock
    -- first; the item's lease is checked again under its lock.
    IF p_retryable THEN
        SELECT a.event_type, coalesce(a.plugin_name, '')
        INTO v_item.event_type, v_item.plugin_name
        FROM _retryq_active AS a
        WHERE a.id = p_item_id
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
            AND (
                p_leased_at IS NULL
                OR pg_catalog.date_trunc('milliseconds', a.last_attempted_at)
                = pg_catalog.date_trunc('milliseconds', p_leased_at)
            );
        IF NOT FOUND THEN
            RETURN FALSE;
        END IF;
        PERFORM _retryq_circuit_lock(v_item.event_type, v_item.plugin_name);
    END IF;
    IF pg_catalog.current_setting('retryq.took_over', TRUE) = 'yes' THEN
        -- this transaction took over leases: it must not wait for an item
        SELECT a.* INTO v_item
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
        SELECT a.* INTO v_item
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
        RETURN FALSE;
    END IF;

    IF p_retryable THEN
        PERFORM _retryq_circuit_failed(
            v_item.event_type, v_item.plugin_name, 1, 0, p_now
        );
    END IF;

    v_entry := pg_catalog.jsonb_build_object(
        'failed_at', p_now,
        'worker_id', p_worker_id,
        'error', p_error_msg,
        'code', p_error_code,
        'retryable', p_retryable
    );
    IF p_retry_after_seconds IS NOT NULL THEN
        -- as numeric: a float8 written as JSON takes the session's
        -- extra_float_digits (-15 wrote 123.456 as 100)
        v_entry := v_entry || pg_catalog.jsonb_build_object(
            'retry_after_seconds', p_retry_after_seconds::numeric
        );
    END IF;
    IF NOT p_retryable OR v_item.retry_count >= v_item.max_retries THEN
        PERFORM _retryq_bury(ARRAY[p_item_id], v_entry, p_now);
        RETURN TRUE;
    END IF;

    IF p_retry_after_seconds IS NULL THEN
        v_due := p_now + _retryq_backoff(
            v_item.retry_count + 1,
            v_item.retry_delay_seconds,
            v_item.backoff_multiplier,
            v_item.max_retry_delay_seconds,
            v_item.retry_jitter
        );
    ELSE
        v_due := p_now + pg_catalog.make_interval(secs => least(
            p_retry_after_seconds, v_item.max_retry_delay_seconds
        ));
    END IF;
    UPDATE _retryq_active AS a
    SET
        status = 'pending',
        retry_count = a.retry_count + 1,
        next_retry_at = v_due,
        error_message = p_error_msg,
        last_error_code = p_error_code,
        error_history = _retryq_history_add(a.error_history, v_entry),
        locked_by = NULL,
        locked_until = NULL
    WHERE a.id = p_item_id;
    IF v_due <= p_now THEN
        PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'retry');
    END IF;
    RETURN TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION fail_retry_item FROM public;
GRANT EXECUTE ON FUNCTION fail_retry_item TO retryq_worker;
