-- The rate-limited keys without a token free at p_now (every token used
-- within the last period), as two arrays: acquire skips their items instead
-- of locking them only to find no token. A look without locks: a token that
-- another acquire is taking still counts as free here (the grant then finds
-- it taken).
CREATE OR REPLACE FUNCTION _retryq_rate_closed(
    p_now timestamptz,
    OUT event_types text[],
    OUT plugin_names text[]
)
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    -- PL/pgSQL, not SQL: its plan is cached (a SQL function's, called from
    -- PL/pgSQL, is planned on every call)
    SELECT
        coalesce(pg_catalog.array_agg(l.event_type), '{}'),
        coalesce(pg_catalog.array_agg(l.plugin_name), '{}')
    INTO event_types, plugin_names
    FROM _retryq_rate_limit AS l
    WHERE NOT EXISTS (
        SELECT 1 FROM _retryq_rate_token AS t
        WHERE t.event_type = l.event_type
            AND t.plugin_name = l.plugin_name
            AND t.used_at <= p_now - l.period
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_rate_closed FROM public;
