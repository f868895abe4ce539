-- Invariant: a permanent error makes a dead letter at once (retried instead)
SELECT pg_temp.mutate('fail_retry_item', 'IF NOT p_retryable OR v_item', 'IF v_item');
