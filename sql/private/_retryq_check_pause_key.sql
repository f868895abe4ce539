-- Checks a pause key given by an operator: event_type NULL (every event type)
-- or as in the queue's own check; plugin_name NULL (every plugin), '' (the
-- items without a plugin) or a name of at most 1000 characters. Refusals are
-- 22023 naming event_type or plugin_name.
CREATE OR REPLACE FUNCTION _retryq_check_pause_key(
    p_event_type text,
    p_plugin_name text
)
RETURNS void
LANGUAGE sql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
    SELECT _retryq_check(
        p_event_type IS NULL
        OR pg_catalog.length(p_event_type) <= 200 AND NOT _retryq_blank(p_event_type),
        'event_type',
        'must be NULL (every event type) or a non-blank string of at most 200 characters'
    );
    SELECT _retryq_check(
        p_plugin_name IS NULL OR pg_catalog.length(p_plugin_name) <= 1000,
        'plugin_name',
        'must be NULL (every plugin), '''' (items without a plugin) or at most 1000 characters'
    )
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_pause_key FROM public;
