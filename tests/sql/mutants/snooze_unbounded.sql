-- Invariant: the snooze past max_snoozes ends the item as a dead letter
SELECT pg_temp.mutate('snooze_retry_item', 'IF v_snoozes >= p_max_snoozes::numeric THEN', 'IF FALSE THEN');
