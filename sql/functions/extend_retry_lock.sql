-- Heartbeat: moves the lease expiry to p_now + p_lock_timeout_seconds. False
-- when p_worker_id no longer holds the lease.
-- p_leased_at: the lease fence (see complete_retry_item). A renewal moves
-- locked_until, never the grant time, so one token lasts the whole lease.
CREATE OR REPLACE FUNCTION extend_retry_lock(
    p_item_id bigint,
    p_worker_id text,
    p_lock_timeout_seconds bigint DEFAULT 300,
    p_now timestamptz DEFAULT now(),
    p_leased_at timestamptz DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
BEGIN
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_lock_timeout_seconds := coalesce(p_lock_timeout_seconds, 300);
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check_worker(p_worker_id);
    PERFORM _retryq_check(
        p_lock_timeout_seconds BETWEEN 1 AND 86400,
        'lock_timeout_seconds', 'must be between 1 and 86400'
    );
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
            RETURN FALSE;
        END IF;
    END IF;
    UPDATE _retryq_active AS a
    SET locked_until = p_now + pg_catalog.make_interval(secs => p_lock_timeout_seconds)
    WHERE a.id = p_item_id
        AND a.status = 'processing'
        AND a.locked_by = p_worker_id
        AND (
            p_leased_at IS NULL
            OR pg_catalog.date_trunc('milliseconds', a.last_attempted_at)
            = pg_catalog.date_trunc('milliseconds', p_leased_at)
        );
    RETURN FOUND;
END;
$$;

REVOKE EXECUTE ON FUNCTION extend_retry_lock FROM public;
GRANT EXECUTE ON FUNCTION extend_retry_lock TO retryq_worker;
