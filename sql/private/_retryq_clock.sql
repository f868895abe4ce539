-- Only the server moves the clock (issue 12, item 3). Every function whose
-- outcome depends on the time takes p_now DEFAULT now() so that tests move
-- time instead of sleeping; the functions start with
--     IF p_now IS NULL OR p_now = now() THEN p_now := clock_timestamp();
--     ELSE p_now := _retryq_clock(p_now); END IF;
-- The default, NULL (a driver's unused argument: NULL means the default) or
-- an explicit now() becomes the server's clock at the call, for every role,
-- so a lease counts from when it is granted, not from the start of the
-- caller's transaction (one clock_timestamp() per call). Any other value is
-- honoured only for a superuser or a member of the role that owns the queue
-- (the role that installed it), as the caller is before the functions'
-- SECURITY DEFINER: SET ROLE counts, the login role otherwise. Everyone else
-- gets 42501 naming now. The infinities are refused for everyone (22023
-- naming now); so is NULL here, which the callers never pass.
CREATE OR REPLACE FUNCTION _retryq_clock(p_now timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_caller name := CASE pg_catalog.current_setting('role')
        WHEN 'none' THEN session_user
        ELSE pg_catalog.current_setting('role')::name
    END;
BEGIN
    IF p_now IS NULL OR NOT pg_catalog.isfinite(p_now) THEN
        RAISE EXCEPTION 'retryq: invalid now: must be a finite time'
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'now';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles AS r
        WHERE r.rolname OPERATOR(pg_catalog.=) v_caller AND r.rolsuper
    ) AND NOT pg_catalog.pg_has_role(
        v_caller,
        (
            SELECT c.relowner FROM pg_catalog.pg_class AS c
            WHERE c.oid OPERATOR(pg_catalog.=) '_retryq_active'::pg_catalog.regclass
        ),
        'USAGE'
    ) THEN
        RAISE EXCEPTION 'retryq: now: only the queue''s owner may move the clock'
            USING ERRCODE = 'insufficient_privilege', COLUMN = 'now',
            HINT = 'Leave p_now out: the server''s clock is used.';
    END IF;
    RETURN p_now;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_clock FROM public;
