-- Invariant: a worker given event types leases (and takes over) only those
SELECT pg_temp.mutate('acquire_retry_items', 'AND (p_event_types IS NULL OR a.event_type = ANY(p_event_types))', 'AND TRUE');
