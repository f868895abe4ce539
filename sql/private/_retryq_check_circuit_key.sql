-- Checks a circuit key given by an operator: event_type as in the queue's own
-- check; plugin_name NULL or '' both mean "items without a plugin".
CREATE OR REPLACE FUNCTION _retryq_check_circuit_key(p_event_type text)
RETURNS void
LANGUAGE sql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
    SELECT _retryq_check(
        pg_catalog.length(p_event_type) <= 200 AND NOT _retryq_blank(p_event_type),
        'event_type', 'must be a non-blank string of at most 200 characters'
    )
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_circuit_key FROM public;
