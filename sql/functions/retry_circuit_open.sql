-- Operator: opens a circuit now. With p_seconds NULL it stays open (forced,
-- no probes) until retry_circuit_close; with p_seconds it behaves as if it had
-- tripped: open that long, then probed. Returns TRUE.
CREATE OR REPLACE FUNCTION retry_circuit_open(
    p_event_type text,
    p_plugin_name text DEFAULT NULL,
    p_seconds double precision DEFAULT NULL,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check_circuit_key(p_event_type);
    PERFORM _retryq_check_plugin_name(p_plugin_name);
    PERFORM _retryq_check(
        p_seconds IS NULL OR p_seconds > 0::float8 AND p_seconds <= 31536000::float8,
        'seconds', 'must be null (until closed), or above 0 and at most 31536000'
    );
    -- lock order (see _retryq_circuit_lock): waits for the row only while
    -- this transaction holds nothing, else refuses rather than risk a deadlock
    IF NOT _retryq_circuit_lock(p_event_type, coalesce(p_plugin_name, '')) THEN
        RAISE EXCEPTION 'retryq: the circuit of (%, %) is held by another transaction',
            p_event_type, coalesce(p_plugin_name, '')
            USING ERRCODE = 'lock_not_available',
            HINT = 'Retry, or change circuits before anything else in the transaction.';
    END IF;
    INSERT INTO _retryq_circuit AS c (
        event_type, plugin_name, state, forced, open_until, opened_at,
        times_opened
    ) VALUES (
        p_event_type, coalesce(p_plugin_name, ''), 'open', p_seconds IS NULL,
        p_now + pg_catalog.make_interval(secs => p_seconds), p_now,
        1
    )
    ON CONFLICT (event_type, plugin_name) DO UPDATE
    SET
        state = 'open',
        forced = excluded.forced,
        open_until = excluded.open_until,
        next_probe_at = NULL,
        probe_id = NULL,
        opened_at = p_now,
        times_opened = c.times_opened + 1;
    RETURN TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_circuit_open FROM public;
GRANT EXECUTE ON FUNCTION retry_circuit_open TO retryq_admin;
