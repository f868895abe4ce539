-- Invariant: a caller's retry_after is still capped by max_retry_delay_seconds
SELECT pg_temp.mutate('fail_retry_item', 'p_retry_after_seconds, v_item.max_retry_delay_seconds', 'p_retry_after_seconds, p_retry_after_seconds');
