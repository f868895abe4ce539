-- Invariant: next_retry_at = delay * multiplier^(k-1) (off by one power)
SELECT pg_temp.mutate('_retryq_backoff', 'power(p_multiplier, p_retry - 1)', 'power(p_multiplier, p_retry)');
