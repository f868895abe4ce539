-- Of the items acquire has picked and locked (p_ids, with their keys, most
-- urgent first), the ones it may lease: every item of a key without a rate
-- limit, and of a limited key as many of the first as its token rows had
-- room for (see _retryq_rate_token: a grant adds its leases to a row in one
-- update, stamped p_now). A key's items go whole to its first row with room
-- for them all; only when no row has, a second statement spreads them over
-- the rows in slot order (each row as far as its room goes). Never waits:
-- rows another transaction holds are skipped, so two acquires never share a
-- row and never queue on one. When a limited key got fewer leases than it
-- has items here, sets retryq.rate_short to 'yes' for the transaction
-- (acquire then closes the keys out of room and scans again). Only acquire
-- calls it, when a limit exists.
CREATE OR REPLACE FUNCTION _retryq_rate_grant(
    p_ids bigint[],
    p_event_types text[],
    p_plugin_names text[],
    p_now timestamptz
)
RETURNS bigint[]
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_granted bigint[];
    v_all boolean;
    -- the keys the first statement served: all their items are granted
    v_served_events text[];
    v_served_plugins text[];
BEGIN
    -- The usual case first, in a lighter statement (it cost half of what
    -- the general one below does): each limited key's items fit in the room
    -- of one row, one update per key, every item granted. The keys it could
    -- not serve go to the statement below.
    WITH keys AS (
        SELECT l.event_type, l.plugin_name, l.period, k.n
        FROM (
            SELECT
                u.event_type,
                coalesce(u.plugin_name, '') AS plugin_name,
                pg_catalog.count(*) AS n
            FROM ROWS FROM (
                pg_catalog.unnest(p_event_types), pg_catalog.unnest(p_plugin_names)
            ) AS u (event_type, plugin_name)
            GROUP BY 1, 2
        ) AS k
        JOIN _retryq_rate_limit AS l
            ON l.event_type = k.event_type AND l.plugin_name = k.plugin_name
    ),
    -- each key's row, locked once (materialized: a lateral run again for
    -- each row the update meets would lock the next row each time)
    rows_ AS MATERIALIZED (
        SELECT k.event_type, k.plugin_name, k.period, k.n, f.slot
        FROM keys AS k
        CROSS JOIN LATERAL (
            SELECT r.slot
            FROM _retryq_rate_token AS r
            WHERE r.event_type = k.event_type
                AND r.plugin_name = k.plugin_name
                AND (
                    r.used_at <= p_now - k.period AND r.cap >= k.n
                    OR r.prev_used_at <= p_now - k.period AND r.cap - r.used >= k.n
                )
            ORDER BY r.slot
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        ) AS f
    ),
    took AS (
        UPDATE _retryq_rate_token AS t
        SET
            used = CASE
                WHEN t.used_at <= p_now - k.period THEN 0 ELSE t.used
            END + k.n,
            prev_used_at = CASE
                WHEN t.used_at <= p_now - k.period THEN t.used_at ELSE t.prev_used_at
            END,
            used_at = greatest(t.used_at, p_now)
        FROM rows_ AS k
        WHERE t.event_type = k.event_type
            AND t.plugin_name = k.plugin_name
            AND t.slot = k.slot
            AND (
                t.used_at <= p_now - k.period AND k.n <= t.cap
                OR t.prev_used_at <= p_now - k.period AND t.used + k.n <= t.cap
            )
        RETURNING t.event_type, t.plugin_name
    )
    SELECT
        (SELECT pg_catalog.count(*) FROM took) = (SELECT pg_catalog.count(*) FROM keys),
        ARRAY(SELECT k.event_type FROM took AS k),
        ARRAY(SELECT k.plugin_name FROM took AS k)
    INTO v_all, v_served_events, v_served_plugins;
    IF v_all THEN
        RETURN p_ids;
    END IF;
    -- one statement for all keys, so that a batch over several limited keys
    -- costs one row UPDATE, not one per key
    WITH items AS (
        SELECT
            u.id,
            u.event_type,
            coalesce(u.plugin_name, '') AS plugin_name,
            -- the item's place among its key's items, most urgent first
            pg_catalog.row_number() OVER (
                PARTITION BY u.event_type, coalesce(u.plugin_name, '') ORDER BY u.ord
            ) AS rank
        FROM ROWS FROM (
            pg_catalog.unnest(p_ids),
            pg_catalog.unnest(p_event_types),
            pg_catalog.unnest(p_plugin_names)
        ) WITH ORDINALITY AS u (id, event_type, plugin_name, ord)
    ),
    wanted AS (
        SELECT l.event_type, l.plugin_name, l.period, pg_catalog.count(*) AS n
        FROM items AS i
        JOIN _retryq_rate_limit AS l
            ON l.event_type = i.event_type AND l.plugin_name = i.plugin_name
        WHERE NOT EXISTS (
            SELECT 1
            FROM ROWS FROM (
                pg_catalog.unnest(v_served_events), pg_catalog.unnest(v_served_plugins)
            ) AS d (event_type, plugin_name)
            WHERE d.event_type = l.event_type AND d.plugin_name = l.plugin_name
        )
        GROUP BY l.event_type, l.plugin_name, l.period
    ),
    -- Per key, the first row with room; only when its room falls short, as
    -- many rows after it as leases are still wanted (each has room for one
    -- at least), so that a row of many tokens costs one lock. SKIP LOCKED: a
    -- row another acquire is taking is not free for this one; one whose
    -- update committed after this statement's snapshot is checked again on
    -- its new version (the room below is that version's).
    firsts AS MATERIALIZED (
        SELECT w.event_type, w.plugin_name, w.period, w.n, f.slot, f.room
        FROM wanted AS w
        CROSS JOIN LATERAL (
            SELECT
                t.slot,
                CASE
                    WHEN t.used_at <= p_now - w.period THEN t.cap ELSE t.cap - t.used
                END AS room
            FROM _retryq_rate_token AS t
            WHERE t.event_type = w.event_type
                AND t.plugin_name = w.plugin_name
                AND (
                    t.used_at <= p_now - w.period
                    OR t.used < t.cap AND t.prev_used_at <= p_now - w.period
                )
            ORDER BY t.slot
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        ) AS f
    ),
    rooms AS (
        SELECT * FROM firsts
        UNION ALL
        SELECT f.event_type, f.plugin_name, f.period, f.n, g.slot, g.room
        FROM firsts AS f
        CROSS JOIN LATERAL (
            SELECT
                t.slot,
                CASE
                    WHEN t.used_at <= p_now - f.period THEN t.cap ELSE t.cap - t.used
                END AS room
            FROM _retryq_rate_token AS t
            WHERE t.event_type = f.event_type
                AND t.plugin_name = f.plugin_name
                AND t.slot > f.slot
                AND (
                    t.used_at <= p_now - f.period
                    OR t.used < t.cap AND t.prev_used_at <= p_now - f.period
                )
            ORDER BY t.slot
            -- LIMIT 0 reads nothing
            LIMIT greatest(f.n - f.room, 0)
            FOR UPDATE SKIP LOCKED
        ) AS g
    ),
    -- how many leases each row gives: the rows in slot order until the
    -- key's items are served
    takes AS (
        SELECT
            r.event_type, r.plugin_name, r.slot, r.period,
            least(r.room, r.n - r.before) AS take
        FROM (
            SELECT
                r.event_type, r.plugin_name, r.slot, r.period, r.n, r.room,
                pg_catalog.sum(r.room) OVER (
                    PARTITION BY r.event_type, r.plugin_name ORDER BY r.slot
                    ROWS UNBOUNDED PRECEDING
                ) - r.room AS before
            FROM rooms AS r
        ) AS r
        WHERE r.before < r.n
    ),
    -- By key (not by ctid: a row whose update committed after this
    -- statement's snapshot, locked above in its new version, has a ctid that
    -- snapshot cannot see), so the update finds the row and updates its new
    -- version; the room is judged again on the version updated (it is
    -- locked: the same as above).
    took AS (
        UPDATE _retryq_rate_token AS t
        SET
            used = CASE
                WHEN t.used_at <= p_now - k.period THEN 0 ELSE t.used
            END + k.take,
            prev_used_at = CASE
                WHEN t.used_at <= p_now - k.period THEN t.used_at ELSE t.prev_used_at
            END,
            used_at = greatest(t.used_at, p_now)
        FROM takes AS k
        WHERE t.event_type = k.event_type
            AND t.plugin_name = k.plugin_name
            AND t.slot = k.slot
            AND (
                t.used_at <= p_now - k.period AND k.take <= t.cap
                OR t.prev_used_at <= p_now - k.period AND t.used + k.take <= t.cap
            )
        RETURNING t.event_type, t.plugin_name, k.take
    ),
    -- per limited key: the items it wants and the leases it got
    counted AS (
        SELECT w.event_type, w.plugin_name, w.n, (
            SELECT coalesce(pg_catalog.sum(k.take), 0) FROM took AS k
            WHERE k.event_type = w.event_type AND k.plugin_name = w.plugin_name
        ) AS granted
        FROM wanted AS w
    )
    -- the most urgent items of each limited key get its leases
    SELECT coalesce(pg_catalog.array_agg(i.id), '{}')
    INTO v_granted
    FROM items AS i
    LEFT JOIN counted AS s
        ON s.event_type = i.event_type AND s.plugin_name = i.plugin_name
    WHERE s.event_type IS NULL OR i.rank <= s.granted;
    IF pg_catalog.cardinality(v_granted) < pg_catalog.cardinality(p_ids) THEN
        PERFORM pg_catalog.set_config('retryq.rate_short', 'yes', TRUE);
    END IF;
    RETURN v_granted;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_rate_grant FROM public;
