-- Invariant: items of a key without a token free do not hold up other keys' items
SELECT pg_temp.mutate('acquire_retry_items', 'pg_catalog.cardinality(v_closed_events) = 0', 'TRUE');
