-- Operator: ends the pause of exactly this key (as given to
-- retry_queue_pause: resuming an event type does not end a pause of the whole
-- queue or of one of its plugins; plugin_name '' is the pause of the items
-- without a plugin, NULL that of every plugin) and wakes the workers.
-- Returns FALSE when the key was not paused.
CREATE OR REPLACE FUNCTION retry_queue_resume(
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM _retryq_check_pause_key(p_event_type, p_plugin_name);
    -- lock order (see _retryq_key_lock): waits only while this transaction
    -- holds nothing, else refuses rather than risk a deadlock
    IF NOT _retryq_key_lock('pause'::text, p_event_type, p_plugin_name, FALSE) THEN
        RAISE EXCEPTION 'retryq: the pause of (%, %) is held by another transaction',
            p_event_type, p_plugin_name
            USING ERRCODE = 'lock_not_available',
            HINT = 'Retry, or change pauses before anything else in the transaction.';
    END IF;
    DELETE FROM _retryq_pause AS z
    WHERE z.event_type IS NOT DISTINCT FROM p_event_type
        AND z.plugin_name IS NOT DISTINCT FROM p_plugin_name;
    IF FOUND THEN
        PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'resume');
    END IF;
    RETURN FOUND;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_queue_resume FROM public;
GRANT EXECUTE ON FUNCTION retry_queue_resume TO retryq_admin;
