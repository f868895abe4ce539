-- Takes the mutex p_name for the rest of this transaction; true once held.
-- The row inserted here is deleted at once: dead to this transaction, still
-- in progress for every other one, whose INSERT of the same name waits in the
-- primary key until this transaction ends (then finds it dead and goes on).
-- Nothing is left behind, and calling it again in the same transaction
-- holds it again. p_wait false gives up instead of waiting (false when
-- another transaction holds it): see _retryq_circuit_lock for who may wait.
-- Only the owner writes _retryq_mutex: unlike an advisory lock's key, no role
-- can take a retryq mutex to make a call wait or skip (issue 12).
CREATE OR REPLACE FUNCTION _retryq_mutex_take(
    p_name text,
    p_wait boolean
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_hash bytea := pg_catalog.sha256(pg_catalog.convert_to(p_name, 'UTF8'));
BEGIN
    IF p_wait THEN
        INSERT INTO _retryq_mutex (name_hash) VALUES (v_hash);
    ELSE
        BEGIN
            PERFORM _retryq_mutex_try(v_hash);
        EXCEPTION WHEN lock_not_available THEN
            RETURN FALSE;
        END;
    END IF;
    DELETE FROM _retryq_mutex AS m WHERE m.name_hash = v_hash;
    RETURN TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_mutex_take FROM public;
