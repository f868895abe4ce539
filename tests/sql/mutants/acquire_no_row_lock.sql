-- Invariant: concurrent acquires take disjoint items (no row lock: both lease the same row)
SELECT pg_temp.mutate('acquire_retry_items', 'FOR UPDATE SKIP LOCKED', '');
