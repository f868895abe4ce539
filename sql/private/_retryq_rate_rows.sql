-- The most token rows a rate limit has (_retryq_rate_token): a limit of N
-- gets least(N, this) rows. More rows cost a grant nothing (it takes the
-- first with room) and lose less throughput at the limit (about 1/(this + 1)
-- of it), but the look for a key without room reads them all. Only
-- retry_rate_limit_set reads it; the model test (tests/sql/test_model.py)
-- replaces it with a small one, so that rows of several tokens meet its few
-- items.
CREATE OR REPLACE FUNCTION _retryq_rate_rows()
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
SELECT 64;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_rate_rows FROM public;
