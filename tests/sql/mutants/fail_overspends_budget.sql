-- Invariant: retry_count never exceeds max_retries (fail allows one retry too many; the table's CHECK dropped so that the tests, not the constraint, must notice)
ALTER TABLE daz_retry_queue DROP CONSTRAINT daz_retry_queue_retry_count_check;
SELECT pg_temp.mutate('fail_retry_item', 'v_item.retry_count >= v_item.max_retries', 'v_item.retry_count > v_item.max_retries');
