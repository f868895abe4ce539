-- Invariant: rows vanish only by cleanup (burying a first-attempt item loses it)
SELECT pg_temp.mutate('_retryq_bury', 'FROM gone AS g;', 'FROM gone AS g WHERE g.retry_count > 0;');
