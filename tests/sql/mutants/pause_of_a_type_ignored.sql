-- Invariant: a paused event type is not leased, nor its expired leases taken over
SELECT pg_temp.mutate('acquire_retry_items', 'WHERE z.event_type IN ('''', a.event_type)', 'WHERE FALSE AND z.event_type IN ('''', a.event_type)');
