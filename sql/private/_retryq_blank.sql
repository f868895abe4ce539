-- The one blank rule for every name-like value (worker_id, event_type,
-- dedupe_key, the event types of routing lists, circuit and pause keys): a
-- value holding nothing but whitespace or invisible format characters is
-- blank. [[:space:]] alone depends on the locale and misses U+200B, U+00A0
-- and others; they are listed. An ordinary name starts with a printable
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
        OR p_value ~ '[^[:space:]\u0085\u00a0\u00ad\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff]'
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_blank FROM public;
