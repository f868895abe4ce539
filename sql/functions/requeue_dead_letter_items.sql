-- Replays dead letters with a fresh retry budget, due at once. Chooses them by
-- ids and/or by event_type, plugin_name, last error code and dead-letter time
-- (_retryq_dead_letter_ids, shared with the listing and purge); at least one
-- filter is required so that a slip never replays everything.
-- Their error history is kept. Returns how many were requeued.
-- Dedupe keys: a dead letter whose key a live item holds stays a dead letter
-- (that item does the work), and of several chosen dead letters with one key
-- only the newest (highest id) is requeued; the others are not counted.
-- Event ids, likewise: a dead letter whose event_id a live item holds (a
-- producer may give a finished item's event id to a new one) stays a dead
-- letter, so that one such row never fails the whole requeue.
CREATE OR REPLACE FUNCTION requeue_dead_letter_items(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_dead_before timestamptz DEFAULT NULL,
    p_now timestamptz DEFAULT now()
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_ids bigint[];
    v_held bigint[];
    v_count integer;
    v_constraint text;
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    -- collected first, so that a missing filter is refused even when no row
    -- would have been looked at
    v_ids := ARRAY(
        SELECT _retryq_dead_letter_ids(
            p_item_ids, p_event_type, p_plugin_name, p_error_code,
            p_dead_before, TRUE
        )
    );
    -- A producer that enqueues one of these keys (or event ids) meanwhile
    -- makes the INSERT fail with 23505 (daz_retry_queue_dedupe_key_idx,
    -- daz_retry_queue_event_id_unique): the round runs again, and that
    -- producer's item now holds the key.
    FOR v_round IN 1..3 LOOP
        BEGIN
            v_held := ARRAY(
                SELECT c.id
                FROM (
                    SELECT
                        f.id, f.dedupe_key,
                        pg_catalog.row_number() OVER (
                            PARTITION BY f.dedupe_key ORDER BY f.id DESC
                        ) AS key_rank
                    FROM _retryq_finished AS f
                    WHERE f.id = ANY(v_ids) AND f.dedupe_key IS NOT NULL
                ) AS c
                WHERE c.key_rank > 1
                    OR EXISTS (
                        SELECT 1 FROM _retryq_active AS a
                        WHERE a.dedupe_key = c.dedupe_key
                    )
            ) OPERATOR(pg_catalog.||) ARRAY(
                SELECT c.id
                FROM (
                    SELECT
                        f.id, f.event_id,
                        pg_catalog.row_number() OVER (
                            PARTITION BY f.event_id ORDER BY f.id DESC
                        ) AS id_rank
                    FROM _retryq_finished AS f
                    WHERE f.id = ANY(v_ids)
                ) AS c
                WHERE c.id_rank > 1
                    OR EXISTS (
                        SELECT 1 FROM _retryq_active AS a
                        WHERE a.event_id = c.event_id
                    )
            );
            -- SKIP LOCKED: a dead letter another transaction is requeueing, purging
            -- or archiving is left to it, never waited for (lock order: see
            -- _retryq_circuit_lock)
            WITH doomed AS (
                SELECT f.id
                FROM _retryq_finished AS f
                WHERE f.status = 'dead_letter'
                    AND f.id = ANY(v_ids)
                    AND f.id <> ALL(v_held)
                ORDER BY f.id
                FOR UPDATE SKIP LOCKED
            ),
            gone AS (
                DELETE FROM _retryq_finished AS f
                USING doomed AS d
                WHERE f.id = d.id
                RETURNING f.*
            )
            INSERT INTO _retryq_active (
                id, event_id, event_type, channel_name, plugin_name, event_data,
                event_metadata, retry_count, max_retries, retry_delay_seconds,
                backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
                correlation_id, tags, status, error_message, last_error_code,
                error_history, created_at, next_retry_at, last_attempted_at,
                completed_at, dead_lettered_at, locked_by, locked_until, dedupe_key
            )
            SELECT
                g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name,
                -- a fresh budget: attempts and snoozes (snooze_retry_item)
                g.event_data, g.event_metadata - 'retryq_snoozes'::text, 0, g.max_retries,
                g.retry_delay_seconds, g.backoff_multiplier, g.max_retry_delay_seconds,
                g.retry_jitter, g.priority, g.correlation_id, g.tags, 'pending',
                g.error_message, g.last_error_code, g.error_history, g.created_at,
                p_now, g.last_attempted_at, NULL, NULL, NULL, NULL, g.dedupe_key
            FROM gone AS g;
            GET DIAGNOSTICS v_count = ROW_COUNT;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
            IF v_constraint IS DISTINCT FROM 'daz_retry_queue_dedupe_key_idx'
                AND v_constraint IS DISTINCT FROM 'daz_retry_queue_event_id_unique'
                OR v_round = 3 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    IF v_count > 0 THEN
        PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'requeue');
    END IF;
    RETURN v_count;
END;
$$;

REVOKE EXECUTE ON FUNCTION requeue_dead_letter_items FROM public;
GRANT EXECUTE ON FUNCTION requeue_dead_letter_items TO retryq_admin;
