-- Invariant: concurrent acquires never wait for each other (FOR UPDATE without SKIP LOCKED)
SELECT pg_temp.mutate('acquire_retry_items', 'FOR UPDATE SKIP LOCKED', 'FOR UPDATE');
