-- p_history with p_entry appended as its next attempt ('attempt' set here),
-- keeping the newest _retryq_limits.max_error_history entries: requeues carry
-- the history over and each entry may hold a long error message, so without a
-- bound one item's history grows without end (and past jsonb's limit, every
-- fail of it would be refused). Attempt numbers go on from the newest entry,
-- so a trimmed history shows where it starts.
CREATE OR REPLACE FUNCTION _retryq_history_add(p_history jsonb, p_entry jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_len integer := pg_catalog.jsonb_array_length(p_history);
    v_max integer;
    v_last jsonb;
    v_attempt integer;
BEGIN
    -- below the setting's floor: no need to read it
    IF v_len < 10 THEN
        RETURN p_history || pg_catalog.jsonb_build_array(
            p_entry || pg_catalog.jsonb_build_object('attempt', v_len + 1)
        );
    END IF;
    SELECT l.max_error_history INTO v_max FROM _retryq_limits AS l;
    v_last := p_history -> -1 -> 'attempt';
    v_attempt := CASE
        WHEN pg_catalog.jsonb_typeof(v_last) = 'number'
            AND v_last::text::numeric BETWEEN 0 AND 2000000000
            THEN v_last::text::numeric::integer + 1
        ELSE v_len + 1
    END;
    IF v_len >= v_max THEN
        SELECT pg_catalog.jsonb_agg(h.entry ORDER BY h.n) INTO p_history
        FROM pg_catalog.jsonb_array_elements(p_history) WITH ORDINALITY AS h (entry, n)
        WHERE h.n > v_len - (v_max - 1);
        p_history := coalesce(p_history, '[]'::jsonb);
    END IF;
    RETURN p_history || pg_catalog.jsonb_build_array(
        p_entry || pg_catalog.jsonb_build_object('attempt', v_attempt)
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_history_add FROM public;
