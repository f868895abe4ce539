-- Invariant: dead_letter only when the budget is spent (one retry too few)
SELECT pg_temp.mutate('fail_retry_item', 'v_item.retry_count >= v_item.max_retries', 'v_item.retry_count + 1 >= v_item.max_retries');
