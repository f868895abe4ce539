-- Adds one item; the same as the guide's INSERT, with named, defaulted
-- parameters and an optional delay before the first attempt. NULL for any
-- optional parameter takes its default (delay_seconds NULL: none).
-- p_dedupe_key (NULL: none): while a live (pending or processing) item holds
-- the key, nothing is added and that item comes back with deduplicated true
-- (its payload and settings unchanged); otherwise the new item holds the key
-- until it finishes. At most 200 characters, not blank (22001, 22023).
-- p_max_retries and p_priority are bigint so that any integer a client sends
-- arrives: beyond integer they are refused naming the field (22003); within
-- it, the columns' CHECKs (23514) hold the rules, as for the guide's INSERT.
CREATE OR REPLACE FUNCTION enqueue_retry_item(
    p_event_type text,
    p_event_data jsonb,
    p_channel_name text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_event_metadata jsonb DEFAULT '{}',
    p_max_retries bigint DEFAULT 3,
    p_retry_delay_seconds double precision DEFAULT 60,
    p_backoff_multiplier double precision DEFAULT 2.0,
    p_priority bigint DEFAULT 5,
    p_correlation_id text DEFAULT NULL,
    p_tags text[] DEFAULT '{}',
    p_delay_seconds double precision DEFAULT 0,
    p_max_retry_delay_seconds double precision DEFAULT 86400,
    p_retry_jitter double precision DEFAULT 0,
    p_now timestamptz DEFAULT now(),
    p_dedupe_key text DEFAULT NULL
)
RETURNS TABLE (id bigint, event_id uuid, deduplicated boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id bigint;
    v_event_id uuid;
    v_constraint text;
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    -- beyond integer: refused by name (the columns' CHECKs refuse the rest)
    IF (p_max_retries BETWEEN -2147483648 AND 2147483647) IS FALSE THEN
        PERFORM _retryq_check_integer('max_retries', p_max_retries);
    END IF;
    IF (p_priority BETWEEN -2147483648 AND 2147483647) IS FALSE THEN
        PERFORM _retryq_check_integer('priority', p_priority);
    END IF;
    PERFORM _retryq_check(
        coalesce(p_delay_seconds, 0::float8) BETWEEN 0::float8 AND 31536000::float8,
        'delay_seconds', 'must be between 0 and 31536000'
    );
    IF p_dedupe_key IS NULL THEN
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
        RETURNING q.id, q.event_id, FALSE;
        RETURN;
    END IF;
    -- With a key: the live item that holds it, or a new one. The unique index
    -- daz_retry_queue_dedupe_key_idx decides between concurrent producers:
    -- the loser's INSERT waits for the winner's commit and fails with 23505,
    -- and its next lookup (a new snapshot under READ COMMITTED) finds the
    -- winner's item. A lookup under REPEATABLE READ or SERIALIZABLE cannot see
    -- a winner that committed after the transaction began: after three rounds
    -- that is 40001, and the caller retries its transaction.
    FOR v_round IN 1..3 LOOP
        SELECT a.id, a.event_id INTO v_id, v_event_id
        FROM _retryq_active AS a
        WHERE a.dedupe_key = p_dedupe_key;
        IF FOUND THEN
            RETURN QUERY SELECT v_id, v_event_id, TRUE;
            RETURN;
        END IF;
        BEGIN
            INSERT INTO daz_retry_queue AS q (
                event_type, channel_name, plugin_name, event_data, event_metadata,
                max_retries, retry_delay_seconds, backoff_multiplier, priority,
                correlation_id, tags, max_retry_delay_seconds, retry_jitter,
                created_at, next_retry_at, dedupe_key
            ) VALUES (
                p_event_type, p_channel_name, p_plugin_name, p_event_data,
                coalesce(p_event_metadata, '{}'), p_max_retries,
                p_retry_delay_seconds, p_backoff_multiplier, p_priority,
                p_correlation_id, coalesce(p_tags, '{}'), p_max_retry_delay_seconds,
                p_retry_jitter, p_now,
                p_now + pg_catalog.make_interval(secs => coalesce(p_delay_seconds, 0)),
                p_dedupe_key
            )
            RETURNING q.id, q.event_id INTO v_id, v_event_id;
            RETURN QUERY SELECT v_id, v_event_id, FALSE;
            RETURN;
        EXCEPTION WHEN unique_violation THEN
            GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
            IF v_constraint IS DISTINCT FROM 'daz_retry_queue_dedupe_key_idx' THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    RAISE EXCEPTION
        'retryq: dedupe_key % is held by an item this transaction cannot see',
        pg_catalog.format('%L', p_dedupe_key)
        USING ERRCODE = 'serialization_failure', COLUMN = 'dedupe_key',
            HINT = 'Retry the transaction (or enqueue under READ COMMITTED).';
END;
$$;

REVOKE EXECUTE ON FUNCTION enqueue_retry_item FROM public;
GRANT EXECUTE ON FUNCTION enqueue_retry_item TO retryq_producer;
