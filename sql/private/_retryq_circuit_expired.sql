-- acquire's books for leases it found expired: one count per key, keys in a
-- fixed order, never waiting (acquire holds item rows, so
-- _retryq_circuit_lock takes only what is free).
CREATE OR REPLACE FUNCTION _retryq_circuit_expired(
    p_event_types text[],
    p_plugin_names text[],
    p_now timestamptz
)
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_key record;
    v_total integer := 0;
BEGIN
    FOR v_key IN
        SELECT u.e, coalesce(u.p, '') AS p, pg_catalog.count(*)::integer AS n
        FROM ROWS FROM (
            pg_catalog.unnest(p_event_types), pg_catalog.unnest(p_plugin_names)
        ) AS u (e, p)
        GROUP BY 1, 2
        ORDER BY 1, 2
    LOOP
        PERFORM _retryq_circuit_failed(
            v_key.e, v_key.p, v_key.n, v_key.n, p_now
        );
        v_total := v_total + v_key.n;
    END LOOP;
    RETURN v_total;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_circuit_expired FROM public;
