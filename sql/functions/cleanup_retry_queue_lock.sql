-- Takes this install's cleanup turn for the rest of the transaction: true
-- when taken, false at once when another transaction holds it (it never
-- waits). Workers sharing a queue call it before cleanup_retry_queue, in the
-- same transaction, so that one of them cleans up at a time. The turn is a
-- mutex only the owner can write (_retryq_mutex_take); with the advisory lock
-- used before, any role holding its well-known key made every cleanup skip.
CREATE OR REPLACE FUNCTION cleanup_retry_queue_lock()
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN _retryq_mutex_take('cleanup'::text, FALSE);
END;
$$;

REVOKE EXECUTE ON FUNCTION cleanup_retry_queue_lock FROM public;
GRANT EXECUTE ON FUNCTION cleanup_retry_queue_lock TO retryq_admin;
