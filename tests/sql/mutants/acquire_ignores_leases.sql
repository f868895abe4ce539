-- Invariant: an item is leased by at most one worker (acquire hands out live leases)
SELECT pg_temp.mutate('acquire_retry_items', 'AND (a.locked_until IS NULL OR a.locked_until <= p_now)', '');
