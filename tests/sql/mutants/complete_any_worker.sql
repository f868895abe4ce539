-- Invariant: only the lease holder can complete (any worker can)
SELECT pg_temp.mutate('complete_retry_items', 'AND a.locked_by = p_worker_id', '');
SELECT pg_temp.mutate('complete_retry_item', 'AND a.locked_by = p_worker_id', '');
