-- Refuses a value over its bound in _retryq_limits, naming the field:
-- item_ids and items by their count (54000 program_limit_exceeded),
-- error_msg and error_code by their length in characters (22001
-- string_data_right_truncation). Callers call it only when the value passes
-- the bound's floor (1000 ids or items, 1000 bytes of error_msg, 200 of
-- error_code), which every setting allows, so the usual call reads nothing.
CREATE OR REPLACE FUNCTION _retryq_check_limit(p_field text, p_size bigint)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_limit integer;
BEGIN
    SELECT CASE p_field
        WHEN 'error_msg' THEN l.max_error_message_length
        WHEN 'error_code' THEN l.max_text_length
        WHEN 'items' THEN l.max_items
        ELSE l.max_item_ids
    END INTO v_limit
    FROM _retryq_limits AS l;
    IF p_size <= v_limit THEN
        RETURN;
    END IF;
    IF p_field IN ('error_msg', 'error_code') THEN
        RAISE EXCEPTION
            'retryq: invalid %: longer than % characters (_retryq_limits)',
            p_field, v_limit
            USING ERRCODE = 'string_data_right_truncation', COLUMN = p_field;
    END IF;
    RAISE EXCEPTION 'retryq: invalid %: more than % elements (_retryq_limits)',
        p_field, v_limit
        USING ERRCODE = 'program_limit_exceeded', COLUMN = p_field;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_limit FROM public;
