-- Raises 22003 numeric_value_out_of_range naming the parameter when p_value
-- does not fit the integer column it is written to. The public functions take
-- bigint for every integer, so that any integer a client sends (psycopg sends
-- 2^31 as int8, Go's int64 is int8) reaches the function and is refused by
-- name; PostgreSQL's own cast would say only "integer out of range". The
-- message states the column's rule, which its CHECK constraint (23514, named
-- after it) applies to what fits. Callers call it only when the value is
-- outside integer, so the usual call runs nothing.
CREATE OR REPLACE FUNCTION _retryq_check_integer(p_field text, p_value bigint)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF (p_value BETWEEN -2147483648 AND 2147483647) IS FALSE THEN
        RAISE EXCEPTION 'retryq: invalid %: % is out of range (must be %)',
            p_field, p_value,
            CASE p_field
                WHEN 'priority' THEN 'between 1 and 10'
                WHEN 'max_retries' THEN 'between 0 and 1000'
                ELSE 'an integer'
            END
            USING ERRCODE = 'numeric_value_out_of_range', COLUMN = p_field;
    END IF;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_integer FROM public;
