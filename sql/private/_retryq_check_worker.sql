-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined and
-- is parsed and planned again in every transaction, which cost the hot path
-- more than the rest of complete_retry_item.
CREATE OR REPLACE FUNCTION _retryq_check_worker(p_worker_id text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM _retryq_check(
        -- an ordinary id (printable ASCII first) is decided without the call
        pg_catalog.ascii(p_worker_id) BETWEEN 33 AND 126 AND pg_catalog.length(p_worker_id) <= 200
        OR pg_catalog.length(p_worker_id) BETWEEN 1 AND 200 AND NOT _retryq_blank(p_worker_id),
        'worker_id',
        'must be a non-blank string (whitespace and invisible characters are blank) of at most 200 characters'
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_worker FROM public;
