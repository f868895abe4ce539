-- Invariant: a completed item is never handed out again (requeue takes completed items too)
SELECT pg_temp.mutate('requeue_dead_letter_items', 'WHERE f.status = ''dead_letter''', 'WHERE TRUE');
