-- Operator: removes the rate limit of the key (p_event_type, p_plugin_name;
-- NULL or '' for items without a plugin); its items are leased without limit
-- again. Returns false when the key had no limit.
CREATE OR REPLACE FUNCTION retry_rate_limit_clear(
    p_event_type text,
    p_plugin_name text DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM _retryq_check_circuit_key(p_event_type);
    PERFORM _retryq_check(
        pg_catalog.length(coalesce(p_plugin_name, '')) <= 1000,
        'plugin_name', 'must be at most 1000 characters'
    );
    -- lock order (see _retryq_key_lock): waits only while this transaction
    -- holds nothing, else refuses rather than risk a deadlock
    IF NOT _retryq_key_lock('rate_limit'::text, p_event_type, coalesce(p_plugin_name, ''), TRUE) THEN
        RAISE EXCEPTION 'retryq: the rate limit of (%, %) is held by another transaction',
            p_event_type, coalesce(p_plugin_name, '')
            USING ERRCODE = 'lock_not_available',
            HINT = 'Retry, or change rate limits before anything else in the transaction.';
    END IF;
    -- its tokens go with it (ON DELETE CASCADE)
    DELETE FROM _retryq_rate_limit AS l
    WHERE l.event_type = p_event_type
        AND l.plugin_name = coalesce(p_plugin_name, '');
    RETURN FOUND;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_rate_limit_clear FROM public;
GRANT EXECUTE ON FUNCTION retry_rate_limit_clear TO retryq_admin;
