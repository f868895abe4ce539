-- Invariant: a takeover of an expired lease takes a token like any lease (it is free instead)
-- (both lease statements, unrouted and routed: the pattern ends the line)
SELECT pg_temp.mutate('acquire_retry_items', 'OR l.spent
', 'OR l.spent OR l.expired
');
