-- Helper for the mutants in this directory (loaded first, same session):
-- replaces p_from by p_to in a function's current definition and reinstalls
-- it. Refuses when p_from is absent, so that a mutant gone stale after an
-- edit of the function fails loudly instead of silently testing nothing.
CREATE FUNCTION pg_temp.mutate(p_fn text, p_from text, p_to text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_def text;
BEGIN
    SELECT pg_get_functiondef(p.oid) INTO STRICT v_def
    FROM pg_proc AS p
    WHERE p.proname = p_fn AND p.pronamespace = current_schema()::regnamespace;
    IF strpos(v_def, p_from) = 0 THEN
        RAISE EXCEPTION 'mutant: % does not contain %', p_fn, p_from;
    END IF;
    EXECUTE replace(v_def, p_from, p_to);
END;
$$;
