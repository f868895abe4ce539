-- Invariant: a worker given event types leases (and takes over) only those
-- (the routed walk: its candidates of every type, and no check on the lock)
SELECT pg_temp.mutate('acquire_retry_items', 'WHERE a.event_type = r.event_type', 'WHERE TRUE');
SELECT pg_temp.mutate('acquire_retry_items', 'AND a.event_type = ANY(p_event_types)', 'AND TRUE');
