-- The one blank rule for every name-like value (worker_id, event_type,
-- dedupe_key, the event types of routing lists, circuit and pause keys): a
-- value holding nothing but whitespace or invisible format characters is
-- blank. [[:space:]] alone depends on the locale and misses U+200B, U+00A0
-- and others; they are listed: Unicode's White_Space and
-- Default_Ignorable_Code_Point sets (Unicode 15: the Hangul fillers U+115F,
-- U+1160, U+3164, U+FFA0, variation selectors, tag characters U+E0000 up),
-- and U+2800 (a blank Braille pattern). retryq_py's _sql.is_blank keeps the
-- same list. An ordinary name starts with a printable
-- ASCII character, which decides it without the regex. STRICT: NULL gives
-- NULL without a call.
-- Where it runs for every row (the table's CHECK on event_type, the
-- trigger condition of _retryq_new_row, _retryq_finished_row_ok) the same
-- test is spelled out, as a call would cost each row a function call
-- (tests/sql/test_kinds.py proves that every path agrees).
CREATE OR REPLACE FUNCTION _retryq_blank(p_value text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
STRICT
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN NOT (
        pg_catalog.ascii(p_value) BETWEEN 33 AND 126
        OR p_value ~ '[^[:space:]\u0085\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]'
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_blank FROM public;
