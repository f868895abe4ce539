-- Counts p_failures failed attempts (p_lease_expiries of them lost leases)
-- against a key and trips its circuit: closed -> open at the threshold;
-- a failure while probing (half_open, or open past its cool-down) reopens it
-- with a doubled cool-down; a failure while cooling down only counts.
-- The row is locked by _retryq_circuit_lock, which waits only while the
-- transaction holds nothing (the lock order is explained there); when it
-- cannot have the row the failure is not counted.
CREATE OR REPLACE FUNCTION _retryq_circuit_failed(
    p_event_type text,
    p_plugin_name text,
    p_failures integer,
    p_lease_expiries integer,
    p_now timestamptz
)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_plugin text := coalesce(p_plugin_name, '');
    v_c _retryq_circuit%ROWTYPE;
    v_d _retryq_circuit_defaults%ROWTYPE;
    v_threshold integer;
    v_trips integer;
BEGIN
    IF NOT _retryq_circuit_lock(p_event_type, v_plugin) THEN
        RETURN;  -- another transaction holds the row
    END IF;

    UPDATE _retryq_circuit AS c
    SET
        consecutive_failures = c.consecutive_failures + p_failures,
        lease_expiries = c.lease_expiries + p_lease_expiries,
        last_failure_at = p_now
    WHERE c.event_type = p_event_type AND c.plugin_name = v_plugin
    RETURNING c.* INTO v_c;

    IF v_c.forced THEN
        RETURN;
    END IF;
    SELECT d.* INTO v_d FROM _retryq_circuit_defaults AS d;
    v_threshold := coalesce(v_c.failure_threshold, v_d.failure_threshold);
    IF v_c.state = 'half_open'
        OR (v_c.state = 'open' AND v_c.open_until <= p_now) THEN
        v_trips := v_c.trips + 1;
    ELSIF v_c.state = 'closed' AND v_threshold > 0
        AND v_c.consecutive_failures >= v_threshold THEN
        v_trips := 0;
    ELSE
        RETURN;
    END IF;
    UPDATE _retryq_circuit AS c
    SET
        state = 'open',
        trips = v_trips,
        open_until = p_now + _retryq_circuit_cooldown(
            v_trips,
            coalesce(c.cooldown_seconds, v_d.cooldown_seconds),
            greatest(
                coalesce(c.cooldown_seconds, v_d.cooldown_seconds),
                coalesce(c.max_cooldown_seconds, v_d.max_cooldown_seconds)
            )
        ),
        next_probe_at = NULL,
        probe_id = NULL,
        opened_at = p_now,
        times_opened = c.times_opened + 1
    WHERE c.event_type = p_event_type AND c.plugin_name = v_plugin;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_circuit_failed FROM public;
