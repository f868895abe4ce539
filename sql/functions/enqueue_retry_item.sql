-- Adds one item; the same as the guide's INSERT, with named, defaulted
-- parameters and an optional delay before the first attempt. NULL for any
-- optional parameter takes its default (delay_seconds NULL: none).
CREATE OR REPLACE FUNCTION enqueue_retry_item(
    p_event_type text,
    p_event_data jsonb,
    p_channel_name text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_event_metadata jsonb DEFAULT '{}',
    p_max_retries integer DEFAULT 3,
    p_retry_delay_seconds double precision DEFAULT 60,
    p_backoff_multiplier double precision DEFAULT 2.0,
    p_priority integer DEFAULT 5,
    p_correlation_id text DEFAULT NULL,
    p_tags text[] DEFAULT '{}',
    p_delay_seconds double precision DEFAULT 0,
    p_max_retry_delay_seconds double precision DEFAULT 86400,
    p_retry_jitter double precision DEFAULT 0,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (id bigint, event_id uuid)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check(
        coalesce(p_delay_seconds, 0::float8) BETWEEN 0::float8 AND 31536000::float8,
        'delay_seconds', 'must be between 0 and 31536000'
    );
    RETURN QUERY
    INSERT INTO daz_retry_queue AS q (
        event_type, channel_name, plugin_name, event_data, event_metadata,
        max_retries, retry_delay_seconds, backoff_multiplier, priority,
        correlation_id, tags, max_retry_delay_seconds, retry_jitter,
        created_at, next_retry_at
    ) VALUES (
        p_event_type, p_channel_name, p_plugin_name, p_event_data,
        coalesce(p_event_metadata, '{}'), p_max_retries,
        p_retry_delay_seconds, p_backoff_multiplier, p_priority,
        p_correlation_id, coalesce(p_tags, '{}'), p_max_retry_delay_seconds,
        p_retry_jitter, p_now,
        p_now + pg_catalog.make_interval(secs => coalesce(p_delay_seconds, 0))
    )
    RETURNING q.id, q.event_id;
END;
$$;

REVOKE EXECUTE ON FUNCTION enqueue_retry_item FROM public;
GRANT EXECUTE ON FUNCTION enqueue_retry_item TO retryq_producer;
