-- The cool-down after p_trips earlier openings since the last close.
CREATE OR REPLACE FUNCTION _retryq_circuit_cooldown(
    p_trips integer,
    p_cooldown double precision,
    p_max double precision
)
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
    SELECT pg_catalog.make_interval(secs => least(
        p_cooldown * pg_catalog.power(2::double precision, least(p_trips, 60)), p_max
    ))
$$;

REVOKE EXECUTE ON FUNCTION _retryq_circuit_cooldown FROM public;
