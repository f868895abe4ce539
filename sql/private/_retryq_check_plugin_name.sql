-- Checks a plugin_name that names a key an operator or a worker creates
-- (retry_circuit_open, retry_circuit_configure, retry_rate_limit_set): NULL
-- or '' (the items without a plugin, one key) or a name of at most 1000
-- characters that is not blank by _retryq_blank's rule. A blank name such as
-- '  ' is refused rather than taken for '': it is a different key in the
-- queue's rows, so quietly folding it would make the key match nothing.
-- The verbs that only end or read a key (close, clear, resume, the filters)
-- do not call it: a key written before the rule stays reachable.
CREATE OR REPLACE FUNCTION _retryq_check_plugin_name(p_plugin_name text)
RETURNS void
LANGUAGE sql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
    SELECT _retryq_check(
        p_plugin_name IS NULL OR p_plugin_name = ''
        OR pg_catalog.length(p_plugin_name) <= 1000 AND NOT _retryq_blank(p_plugin_name),
        'plugin_name',
        'must be NULL or '''' (items without a plugin) or a non-blank name of at most 1000 characters'
    )
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_plugin_name FROM public;
