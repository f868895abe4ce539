-- Invariant: acquire never waits for a token another transaction holds
SELECT pg_temp.mutate('_retryq_rate_grant', 'FOR UPDATE SKIP LOCKED', 'FOR UPDATE');
