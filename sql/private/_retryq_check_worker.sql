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
        pg_catalog.length(pg_catalog.btrim(p_worker_id, E' \t\n\r\f\x0b')) BETWEEN 1 AND 200,
        'worker_id',
        'must be a non-blank string (spaces, tabs and newlines are blank) of at most 200 characters'
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_worker FROM public;
