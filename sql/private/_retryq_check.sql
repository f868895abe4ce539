-- Raises 22023 invalid_parameter_value naming the parameter when p_ok is not
-- true (NULL counts as not ok).
CREATE OR REPLACE FUNCTION _retryq_check(p_ok boolean, p_field text, p_rule text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_ok IS NOT TRUE THEN
        RAISE EXCEPTION 'retryq: invalid %: %', p_field, p_rule
            USING ERRCODE = 'invalid_parameter_value', COLUMN = p_field;
    END IF;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check FROM public;
