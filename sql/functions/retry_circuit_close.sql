-- Operator: closes a circuit now and forgets its failure streak, whatever
-- its state (forced or not). False when the key has no circuit row.
CREATE OR REPLACE FUNCTION retry_circuit_close(
    p_event_type text,
    p_plugin_name text DEFAULT NULL,
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
    PERFORM _retryq_check(
        pg_catalog.length(coalesce(p_plugin_name, '')) <= 1000,
        'plugin_name', 'must be at most 1000 characters'
    );
    IF NOT EXISTS (
        SELECT 1 FROM _retryq_circuit AS c
        WHERE c.event_type = p_event_type
            AND c.plugin_name = coalesce(p_plugin_name, '')
    ) THEN
        RETURN FALSE;
    END IF;
    -- lock order (see _retryq_circuit_lock): waits for the row only while
    -- this transaction holds nothing, else refuses rather than risk a deadlock
    IF NOT _retryq_circuit_lock(p_event_type, coalesce(p_plugin_name, '')) THEN
        RAISE EXCEPTION 'retryq: the circuit of (%, %) is held by another transaction',
            p_event_type, coalesce(p_plugin_name, '')
            USING ERRCODE = 'lock_not_available',
            HINT = 'Retry, or change circuits before anything else in the transaction.';
    END IF;
    UPDATE _retryq_circuit AS c
    SET
        state = 'closed',
        forced = FALSE,
        consecutive_failures = 0,
        trips = 0,
        open_until = NULL,
        next_probe_at = NULL,
        probe_id = NULL,
        closed_at = CASE WHEN c.state = 'closed' THEN c.closed_at ELSE p_now END
    WHERE c.event_type = p_event_type
        AND c.plugin_name = coalesce(p_plugin_name, '');
    IF FOUND THEN
        PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'circuit');
    END IF;
    RETURN FOUND;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_circuit_close FROM public;
GRANT EXECUTE ON FUNCTION retry_circuit_close TO retryq_admin;
