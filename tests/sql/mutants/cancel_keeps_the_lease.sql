-- Invariant: a cancelled item's holder finds no lease (the cancel leaves a leased item in place)
SELECT pg_temp.mutate('_retryq_finish', 'p_worker_id IS NULL', $$p_worker_id IS NULL AND (a.status = 'pending' OR p_status <> 'cancelled')$$);
