-- Invariant: a dead worker's lease is taken over once it expires (never, instead)
SELECT pg_temp.mutate('acquire_retry_items', 'AND (a.locked_until IS NULL OR a.locked_until <= p_now)', 'AND a.locked_until IS NULL');
