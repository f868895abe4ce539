-- complete's books: a success ends the key's failure streak and closes its
-- circuit (unless an operator forced it open). Only keys with a streak are
-- written, in key order. Its callers have locked the items they completed,
-- so it never waits (lock order: see _retryq_circuit_lock): it skips the rows
-- another transaction holds (a missed success then costs one more failure or
-- probe).
CREATE OR REPLACE FUNCTION _retryq_circuit_succeeded(
    p_event_types text[],
    p_plugin_names text[],
    p_now timestamptz
)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_keys text[];
BEGIN
    SELECT pg_catalog.array_agg(k.event_type || pg_catalog.chr(31) || k.plugin_name) INTO v_keys
    FROM (
        SELECT c.event_type, c.plugin_name
        FROM _retryq_circuit AS c
        WHERE (c.event_type, c.plugin_name) IN (
            SELECT u.e, coalesce(u.p, '')
            FROM ROWS FROM (
                pg_catalog.unnest(p_event_types), pg_catalog.unnest(p_plugin_names)
            ) AS u (e, p)
        )
            AND (c.state <> 'closed' OR c.consecutive_failures > 0)
            AND NOT c.forced
        ORDER BY c.event_type, c.plugin_name
        FOR UPDATE SKIP LOCKED
    ) AS k;
    IF v_keys IS NULL THEN
        RETURN;
    END IF;
    UPDATE _retryq_circuit AS c
    SET
        state = 'closed',
        consecutive_failures = 0,
        trips = 0,
        open_until = NULL,
        next_probe_at = NULL,
        probe_id = NULL,
        closed_at = CASE WHEN c.state = 'closed' THEN c.closed_at ELSE p_now END
    WHERE c.event_type || pg_catalog.chr(31) || c.plugin_name = ANY(v_keys);
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_circuit_succeeded FROM public;
