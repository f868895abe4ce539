-- The wait before retry number p_retry (1-based): delay * multiplier^(retry-1),
-- capped, then shortened by up to p_jitter of itself. Computed in logarithms so
-- that a large exponent caps instead of overflowing.
CREATE OR REPLACE FUNCTION _retryq_backoff(
    p_retry integer,
    p_delay double precision,
    p_multiplier double precision,
    p_cap double precision,
    p_jitter double precision
)
RETURNS interval
-- PL/pgSQL for the same reason as retry_queue_channel
LANGUAGE plpgsql
VOLATILE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN pg_catalog.make_interval(secs => (
        CASE
            WHEN p_delay = 0::float8 OR p_cap = 0::float8 THEN 0::float8
            WHEN p_delay >= p_cap THEN p_cap
            WHEN pg_catalog.ln(p_delay) + (p_retry - 1)::float8 * pg_catalog.ln(p_multiplier) >= pg_catalog.ln(p_cap)
                THEN p_cap
            ELSE p_delay * pg_catalog.power(p_multiplier, p_retry - 1)
        END
    ) * (1::float8 - p_jitter * pg_catalog.random()));
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_backoff FROM public;
