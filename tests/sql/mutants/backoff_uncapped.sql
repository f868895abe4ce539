-- Invariant: the backoff is capped by max_retry_delay_seconds (cap ignored)
SELECT pg_temp.mutate('_retryq_backoff', 'THEN p_cap', 'THEN p_delay * power(p_multiplier, p_retry - 1)');
