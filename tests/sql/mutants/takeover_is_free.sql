-- Invariant: a lease-expiry takeover counts as an attempt (it costs nothing instead)
SELECT pg_temp.mutate('acquire_retry_items', 'retry_count = a.retry_count + (a.status = ''processing'')::integer', 'retry_count = a.retry_count');
