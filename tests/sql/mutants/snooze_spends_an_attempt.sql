-- Invariant: a snooze spends no attempt (retry_count goes up)
SELECT pg_temp.mutate('snooze_retry_item', 'status = ''pending'',', 'status = ''pending'', retry_count = least(a.retry_count + 1, a.max_retries),');
