-- Invariant: within a key the tokens go to its most urgent items (to the least urgent instead)
SELECT pg_temp.mutate('_retryq_rate_grant', 'PARTITION BY i.event_type, i.plugin_name ORDER BY i.ord', 'PARTITION BY i.event_type, i.plugin_name ORDER BY i.ord DESC');
