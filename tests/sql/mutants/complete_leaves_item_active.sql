-- Invariant: a completed item is never handed out again (completion puts it back as pending)
SELECT pg_temp.mutate('complete_retry_items', 'INSERT INTO _retryq_finished AS f (', 'INSERT INTO _retryq_active AS f (');
SELECT pg_temp.mutate('complete_retry_items', '''completed'', g.error_message', '''pending'', g.error_message');
SELECT pg_temp.mutate('complete_retry_items', 'g.last_attempted_at, p_now, NULL, NULL, NULL', 'g.last_attempted_at, NULL, NULL, NULL, NULL');
SELECT pg_temp.mutate('complete_retry_item', 'INSERT INTO _retryq_completed AS f (', 'INSERT INTO _retryq_active AS f (');
SELECT pg_temp.mutate('complete_retry_item', '''completed'', g.error_message', '''pending'', g.error_message');
SELECT pg_temp.mutate('complete_retry_item', 'g.last_attempted_at, p_now, NULL, NULL, NULL', 'g.last_attempted_at, NULL, NULL, NULL, NULL');
