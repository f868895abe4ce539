-- _retryq_mutex_take's attempt that does not wait: the INSERT waits at most
-- lock_timeout's floor (1 ms) for another holder, then fails with 55P03
-- (lock_not_available). The SET clause is undone when the function returns
-- or fails, so the caller's lock_timeout is never changed.
CREATE OR REPLACE FUNCTION _retryq_mutex_try(
    p_name_hash bytea
)
RETURNS void
LANGUAGE sql
SET lock_timeout = '1ms'
SET search_path FROM CURRENT
AS $$
    INSERT INTO _retryq_mutex (name_hash) VALUES (p_name_hash);
$$;

REVOKE EXECUTE ON FUNCTION _retryq_mutex_try FROM public;
