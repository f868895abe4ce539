-- Invariant: a token is free again exactly one period after its use (a moment later instead)
SELECT pg_temp.mutate('_retryq_rate_grant', 't.used_at <= p_now - w.period', 't.used_at < p_now - w.period');
