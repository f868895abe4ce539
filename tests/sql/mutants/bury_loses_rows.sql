-- Invariant: rows vanish only by cleanup (burying or cancelling a first-attempt item loses it)
SELECT pg_temp.mutate('_retryq_finish', $$FROM gone AS g
        RETURNING 1$$, $$FROM gone AS g WHERE g.retry_count > 0
        RETURNING 1$$);
