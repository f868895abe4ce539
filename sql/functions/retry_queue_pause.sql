-- Operator: pauses the items of an event type, of one plugin of it, of a
-- plugin across event types, or (both NULL) the whole queue. Until
-- retry_queue_resume with the same key, acquire leases none of them, takes
-- none over when its lease expired (an item a worker is running finishes, and
-- its outcome is written as usual), and their retry budgets stay as they are;
-- enqueueing goes on. plugin_name NULL means every plugin, items without one
-- included; '' only the items without a plugin (plugin_name NULL or '').
-- p_reason (at most 1000 characters) is shown by
-- daz_retry_queue_pauses. Returns TRUE when the key was not paused yet, FALSE
-- when it was (a given reason then replaces the old one; paused_at stays).
CREATE OR REPLACE FUNCTION retry_queue_pause(
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_reason text DEFAULT NULL,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_new boolean;
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check_pause_key(p_event_type, p_plugin_name);
    -- a new key is not blank (see _retryq_check_plugin_name); resume takes
    -- any, so that a pause made before the rule can still be ended
    PERFORM _retryq_check(
        p_plugin_name IS NULL OR p_plugin_name = '' OR NOT _retryq_blank(p_plugin_name),
        'plugin_name',
        'must be NULL (every plugin), '''' (items without a plugin) or a non-blank name'
    );
    PERFORM _retryq_check(
        p_reason IS NULL OR pg_catalog.length(p_reason) <= 1000,
        'reason', 'must be at most 1000 characters'
    );
    -- lock order (see _retryq_key_lock): waits only while this transaction
    -- holds nothing, else refuses rather than risk a deadlock
    IF NOT _retryq_key_lock('pause'::text, p_event_type, p_plugin_name, FALSE) THEN
        RAISE EXCEPTION 'retryq: the pause of (%, %) is held by another transaction',
            p_event_type, p_plugin_name
            USING ERRCODE = 'lock_not_available',
            HINT = 'Retry, or change pauses before anything else in the transaction.';
    END IF;
    INSERT INTO _retryq_pause (
        event_type, plugin_name, paused_at, paused_by, reason
    ) VALUES (
        p_event_type, p_plugin_name, p_now, session_user, p_reason
    )
    -- the key's NULLs are not distinct (_retryq_pause_key)
    ON CONFLICT (event_type, plugin_name) DO NOTHING;
    v_new := FOUND;
    IF NOT v_new AND p_reason IS NOT NULL THEN
        UPDATE _retryq_pause AS z
        SET reason = p_reason
        WHERE z.event_type IS NOT DISTINCT FROM p_event_type
            AND z.plugin_name IS NOT DISTINCT FROM p_plugin_name;
    END IF;
    RETURN v_new;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_queue_pause FROM public;
GRANT EXECUTE ON FUNCTION retry_queue_pause TO retryq_admin;
