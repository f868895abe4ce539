-- Of the items acquire has picked and locked (p_ids, with their keys, most
-- urgent first), the ones it may lease: every item of a key without a rate
-- limit, and of a limited key as many of the first as tokens could be taken
-- (one token per lease, stamped p_now; see _retryq_rate_token). Never waits:
-- tokens another transaction holds are skipped, so two acquires never share a
-- token and never queue on one. When a limited key got fewer tokens than it
-- has items here, sets retryq.rate_short to 'yes' for the transaction
-- (acquire then closes the keys out of tokens and scans again). Only acquire
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
BEGIN
    -- one statement for all keys, so that a batch over several limited keys
    -- costs one token UPDATE, not one per key
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
        GROUP BY l.event_type, l.plugin_name, l.period
    ),
    -- SKIP LOCKED: a token another acquire is taking is not free for this
    -- one; one whose new stamp committed after this statement's snapshot is
    -- checked again on that stamp (and is not free either). By ctid: a join
    -- gets a hash join over every token in the generic plan; the rows are
    -- locked, so their ctids hold.
    took AS (
        UPDATE _retryq_rate_token AS t
        SET used_at = p_now
        WHERE t.ctid = ANY(ARRAY(
            SELECT f.tid
            FROM wanted AS w
            CROSS JOIN LATERAL (
                SELECT t.ctid AS tid
                FROM _retryq_rate_token AS t
                WHERE t.event_type = w.event_type
                    AND t.plugin_name = w.plugin_name
                    AND t.used_at <= p_now - w.period
                ORDER BY t.used_at
                LIMIT w.n
                FOR UPDATE SKIP LOCKED
            ) AS f
        ))
        RETURNING t.event_type, t.plugin_name
    ),
    -- per limited key: the items it wants and the tokens it got
    counted AS (
        SELECT w.event_type, w.plugin_name, w.n, (
            SELECT pg_catalog.count(*) FROM took AS k
            WHERE k.event_type = w.event_type AND k.plugin_name = w.plugin_name
        ) AS granted
        FROM wanted AS w
    )
    -- the most urgent items of each limited key get its tokens
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
