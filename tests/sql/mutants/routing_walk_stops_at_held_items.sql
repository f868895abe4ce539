-- Invariant: a routed worker leases what is due of its types even when
-- others hold the most urgent of them (the walk goes on past them)
SELECT pg_temp.mutate('acquire_retry_items', 'CONTINUE WHEN p_event_types IS NOT NULL', 'CONTINUE WHEN FALSE');
