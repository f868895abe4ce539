-- Invariant: a token row takes at most its cap of leases per use (its room ignores what its use took)
SELECT pg_temp.mutate('_retryq_rate_grant', 'ELSE t.cap - t.used', 'ELSE t.cap');
SELECT pg_temp.mutate('_retryq_rate_grant', 't.used + k.take <= t.cap', 'k.take <= t.cap');
