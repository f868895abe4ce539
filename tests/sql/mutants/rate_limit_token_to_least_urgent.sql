-- Invariant: within a key the tokens go to its most urgent items (to the least urgent instead)
SELECT pg_temp.mutate('_retryq_rate_grant', $$PARTITION BY u.event_type, coalesce(u.plugin_name, '') ORDER BY u.ord$$, $$PARTITION BY u.event_type, coalesce(u.plugin_name, '') ORDER BY u.ord DESC$$);
