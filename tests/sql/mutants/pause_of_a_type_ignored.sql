-- Invariant: a paused event type is not leased, nor its expired leases taken over
SELECT pg_temp.mutate('acquire_retry_items', 'WHERE (z.event_type IS NULL OR z.event_type = a.event_type)', 'WHERE FALSE AND (z.event_type IS NULL OR z.event_type = a.event_type)');
