-- Of the items acquire has picked and locked (p_ids, with their keys, most
-- urgent first), the ones it may lease: every item of a key without a rate
-- limit, and of a limited key as many of the first as tokens could be taken
-- (one token per lease, stamped p_now; see _retryq_rate_token). Never waits:
-- tokens another transaction holds are skipped, so two acquires never share a
-- token and never queue on one. Only acquire calls it, when a limit exists.
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
    v_granted bigint[] := '{}';
    v_k record;
    v_taken integer;
BEGIN
    FOR v_k IN
        SELECT
            i.event_type,
            i.plugin_name,
            pg_catalog.array_agg(i.id ORDER BY i.ord) AS ids,
            pg_catalog.count(*)::integer AS wanted,
            pg_catalog.min(l.period) AS period
        FROM (
            SELECT u.id, u.event_type, coalesce(u.plugin_name, '') AS plugin_name, u.ord
            FROM ROWS FROM (
                pg_catalog.unnest(p_ids),
                pg_catalog.unnest(p_event_types),
                pg_catalog.unnest(p_plugin_names)
            ) WITH ORDINALITY AS u (id, event_type, plugin_name, ord)
        ) AS i
        LEFT JOIN _retryq_rate_limit AS l
            ON l.event_type = i.event_type AND l.plugin_name = i.plugin_name
        GROUP BY i.event_type, i.plugin_name
        -- keys in one order, so that concurrent grants take tokens alike
        ORDER BY i.event_type, i.plugin_name
    LOOP
        IF v_k.period IS NULL THEN
            v_granted := v_granted || v_k.ids;
            CONTINUE;
        END IF;
        -- SKIP LOCKED: a token another acquire is taking is not free for this
        -- one; one whose new stamp committed after this statement's snapshot
        -- is checked again on that stamp (and is not free either)
        WITH free AS (
            SELECT t.slot
            FROM _retryq_rate_token AS t
            WHERE t.event_type = v_k.event_type
                AND t.plugin_name = v_k.plugin_name
                AND t.used_at <= p_now - v_k.period
            ORDER BY t.used_at, t.slot
            LIMIT v_k.wanted
            FOR UPDATE SKIP LOCKED
        ),
        took AS (
            UPDATE _retryq_rate_token AS t
            SET used_at = p_now
            FROM free AS f
            WHERE t.event_type = v_k.event_type
                AND t.plugin_name = v_k.plugin_name
                AND t.slot = f.slot
            RETURNING 1
        )
        SELECT pg_catalog.count(*)::integer INTO v_taken FROM took;
        v_granted := v_granted || v_k.ids[1:v_taken];
    END LOOP;
    RETURN v_granted;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_rate_grant FROM public;
