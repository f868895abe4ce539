-- Takes an operator's lock on a key of p_kind ('rate_limit' or 'pause') for
-- this transaction; false when it cannot without risking a deadlock (the
-- caller refuses with 55P03). The rule of _retryq_circuit_lock: a transaction
-- waits only while it holds no row lock (no transaction id yet), and then takes
-- one, so that its next wait is refused instead; a transaction that already
-- holds locks takes the key only when it is free. Every call that writes a
-- pause or a rate limit (and its tokens) takes the key's mutex first
-- (_retryq_mutex_take: a lock only the owner can take, unlike the advisory
-- lock used before, which any role could hold to hang these calls),
-- so once this transaction has it, no one else holds the key's rows but an
-- acquire's lease of a rate token: p_tokens also takes the key's tokens (only
-- when free once locks are held), before the caller touches the limit row.
-- Two operators' transactions that pause (or limit) two keys in the opposite
-- orders, one that limits a key whose token a worker's transaction holds
-- while that worker limits another, or a clear that held the limit row while
-- waiting for a token whose holder leased again (and so checked the limit
-- row), deadlocked before.
CREATE OR REPLACE FUNCTION _retryq_key_lock(
    p_kind text,
    p_event_type text,
    p_plugin_name text,
    p_tokens boolean
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    -- a pause's NULL (every event type or plugin) apart from '' (no plugin)
    v_mutex text := p_kind || pg_catalog.chr(31)
        || coalesce(p_event_type, pg_catalog.chr(30)) || pg_catalog.chr(31)
        || coalesce(p_plugin_name, pg_catalog.chr(30));
BEGIN
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NULL THEN
        -- nothing held yet: waiting is safe; from here on this transaction
        -- holds a lock (and a transaction id): it waits no more
        PERFORM _retryq_mutex_take(v_mutex, TRUE);
        IF p_tokens THEN
            -- before the caller locks the limit row: a transaction holding one
            -- of these tokens checks its key against the limit row when it
            -- leases again (the foreign key), so it must find it free
            PERFORM 1 FROM _retryq_rate_token AS t
            WHERE t.event_type = p_event_type AND t.plugin_name = p_plugin_name
            FOR UPDATE;
        END IF;
        RETURN TRUE;
    END IF;
    IF NOT _retryq_mutex_take(v_mutex, FALSE) THEN
        RETURN FALSE;
    END IF;
    IF p_tokens THEN
        BEGIN
            PERFORM 1 FROM _retryq_rate_token AS t
            WHERE t.event_type = p_event_type AND t.plugin_name = p_plugin_name
            FOR UPDATE NOWAIT;
        EXCEPTION WHEN lock_not_available THEN
            RETURN FALSE;
        END;
    END IF;
    RETURN TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_key_lock FROM public;
