-- Replays dead letters with a fresh retry budget, due at once, and says what
-- became of each: requeue_dead_letter_items (which returns only the count)
-- with one row per id it chose or was given, in id order, so that a caller
-- in any language can tell an operator which were skipped and why. Chooses
-- them by ids and/or by event_type, plugin_name, last error code and
-- dead-letter time (_retryq_dead_letter_ids, shared with the listing and
-- purge); at least one filter is required so that a slip never replays
-- everything. Their error history is kept.
-- outcome, with held_by and item_status (the item's status once done, NULL
-- when the queue has no such item):
--   requeued         now pending
--   dedupe_key_held  left a dead letter: held_by holds its dedupe key, a live
--                    item (which does the work) or a newer dead letter with
--                    the key chosen with it (the newest of them is requeued)
--   event_id_held    left a dead letter: held_by holds its event_id (a live
--                    item a producer gave it, or a newer chosen dead letter)
--   busy             left a dead letter: another transaction holds its row
--                    (requeueing, purging or archiving it); run again
--   not_dead_letter  a given id (or one another transaction changed meanwhile)
--                    whose item is not a dead letter (item_status says what)
--   filtered_out     a given id of a dead letter the other filters exclude
--   not_found        a given id the queue has no item for
-- A producer that enqueues one of these keys (or event ids) meanwhile makes
-- the INSERT fail with 23505 (daz_retry_queue_dedupe_key_idx,
-- daz_retry_queue_event_id_unique): the round runs again, and that
-- producer's item now holds the key.
CREATE OR REPLACE FUNCTION requeue_dead_letter_items_report(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_dead_before timestamptz DEFAULT NULL,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (item_id bigint, outcome text, held_by bigint, item_status text)
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_ids bigint[];
    v_held bigint[];
    v_why text[];
    v_holder bigint[];
    v_done bigint[];
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
    FOR v_round IN 1..3 LOOP
        BEGIN
            -- each chosen dead letter whose key or event id is held, with
            -- the first reason and its holder (a live item before a newer
            -- chosen dead letter)
            SELECT
                coalesce(pg_catalog.array_agg(h.id ORDER BY h.id), '{}'),
                coalesce(pg_catalog.array_agg(h.why ORDER BY h.id), '{}'),
                coalesce(pg_catalog.array_agg(h.holder ORDER BY h.id), '{}')
            INTO v_held, v_why, v_holder
            FROM (
                SELECT DISTINCT ON (r.id) r.id, r.why, r.holder
                FROM (
                    SELECT
                        c.id, 1 AS rank, 'dedupe_key_held' AS why,
                        coalesce(
                            (
                                SELECT a.id FROM _retryq_active AS a
                                WHERE a.dedupe_key = c.dedupe_key LIMIT 1
                            ),
                            nullif(c.key_newest, c.id)
                        ) AS holder
                    FROM (
                        SELECT
                            f.id, f.dedupe_key,
                            pg_catalog.first_value(f.id) OVER (
                                PARTITION BY f.dedupe_key ORDER BY f.id DESC
                            ) AS key_newest
                        FROM _retryq_finished AS f
                        WHERE f.id = ANY(v_ids) AND f.dedupe_key IS NOT NULL
                    ) AS c
                    UNION ALL
                    SELECT
                        c.id, 2 AS rank, 'event_id_held' AS why,
                        coalesce(
                            (
                                SELECT a.id FROM _retryq_active AS a
                                WHERE a.event_id = c.event_id LIMIT 1
                            ),
                            nullif(c.id_newest, c.id)
                        ) AS holder
                    FROM (
                        SELECT
                            f.id, f.event_id,
                            pg_catalog.first_value(f.id) OVER (
                                PARTITION BY f.event_id ORDER BY f.id DESC
                            ) AS id_newest
                        FROM _retryq_finished AS f
                        WHERE f.id = ANY(v_ids)
                    ) AS c
                ) AS r
                WHERE r.holder IS NOT NULL
                ORDER BY r.id ASC, r.rank ASC
            ) AS h;
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
            ),
            put AS (
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
                    g.event_data, g.event_metadata - 'retryq_snoozes'::text, 0,
                    g.max_retries, g.retry_delay_seconds, g.backoff_multiplier,
                    g.max_retry_delay_seconds, g.retry_jitter, g.priority,
                    g.correlation_id, g.tags, 'pending', g.error_message,
                    g.last_error_code, g.error_history, g.created_at, p_now,
                    g.last_attempted_at, NULL, NULL, NULL, NULL, g.dedupe_key
                FROM gone AS g
                RETURNING _retryq_active.id
            )
            SELECT ARRAY(SELECT p.id FROM put AS p) INTO v_done;
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
    IF pg_catalog.cardinality(v_done) > 0 THEN
        PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'requeue');
    END IF;
    RETURN QUERY
    SELECT
        s.id,
        CASE
            WHEN s.id = ANY(v_done) THEN 'requeued'
            WHEN h.why IS NOT NULL THEN h.why
            WHEN q.status IS NULL THEN 'not_found'
            WHEN q.status <> 'dead_letter' THEN 'not_dead_letter'
            WHEN s.id = ANY(v_ids) THEN 'busy'
            ELSE 'filtered_out'
        END,
        h.holder,
        q.status
    FROM (
        SELECT pg_catalog.unnest(v_ids) AS id
        UNION
        SELECT pg_catalog.unnest(p_item_ids)
    ) AS s
    LEFT JOIN ROWS FROM (
        pg_catalog.unnest(v_held), pg_catalog.unnest(v_why),
        pg_catalog.unnest(v_holder)
    ) AS h (id, why, holder) ON s.id = h.id
    LEFT JOIN LATERAL (
        SELECT d.status FROM daz_retry_queue AS d WHERE d.id = s.id
    ) AS q ON TRUE
    ORDER BY s.id;
END;
$$;

REVOKE EXECUTE ON FUNCTION requeue_dead_letter_items_report FROM public;
GRANT EXECUTE ON FUNCTION requeue_dead_letter_items_report TO retryq_admin;
