-- Checks acquire's routing lists (see acquire_retry_items): each NULL (every
-- item) or a one-dimensional array of 1 to 1000 non-NULL elements; an event
-- type is non-blank, a plugin name is '' (items without a plugin) or
-- non-blank (see _retryq_check_plugin_name).
-- Refusals are 22023 naming event_types or plugin_names.
CREATE OR REPLACE FUNCTION _retryq_check_routing(
    p_event_types text[],
    p_plugin_names text[]
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_event_types IS NOT NULL THEN
        PERFORM _retryq_check(
            pg_catalog.cardinality(p_event_types) BETWEEN 1 AND 1000,
            'event_types',
            'must be NULL (every event type) or hold 1 to 1000 event types'
        );
        -- array_position raises 0A000 on a multidimensional array
        PERFORM _retryq_check(
            pg_catalog.array_ndims(p_event_types) = 1,
            'event_types', 'must be a one-dimensional array'
        );
        PERFORM _retryq_check(
            pg_catalog.array_position(p_event_types, NULL) IS NULL,
            'event_types', 'must not hold NULL'
        );
        PERFORM _retryq_check(
            NOT EXISTS (
                SELECT 1 FROM pg_catalog.unnest(p_event_types) AS t (event_type)
                WHERE _retryq_blank(t.event_type)
            ),
            'event_types', 'must not hold a blank event type'
        );
    END IF;
    IF p_plugin_names IS NOT NULL THEN
        PERFORM _retryq_check(
            pg_catalog.cardinality(p_plugin_names) BETWEEN 1 AND 1000,
            'plugin_names',
            'must be NULL (every plugin) or hold 1 to 1000 plugin names ('''' for none)'
        );
        -- array_position raises 0A000 on a multidimensional array
        PERFORM _retryq_check(
            pg_catalog.array_ndims(p_plugin_names) = 1,
            'plugin_names', 'must be a one-dimensional array'
        );
        PERFORM _retryq_check(
            pg_catalog.array_position(p_plugin_names, NULL) IS NULL,
            'plugin_names', 'must not hold NULL (use '''' for items without a plugin)'
        );
        PERFORM _retryq_check(
            NOT EXISTS (
                SELECT 1 FROM pg_catalog.unnest(p_plugin_names) AS t (plugin_name)
                WHERE t.plugin_name <> '' AND _retryq_blank(t.plugin_name)
            ),
            'plugin_names',
            'must not hold a blank plugin name (use '''' for items without a plugin)'
        );
    END IF;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_routing FROM public;
