-- Invariant: only the lease holder can extend (any worker can, even after a takeover)
SELECT pg_temp.mutate('extend_retry_lock', 'AND a.locked_by = p_worker_id', '');
