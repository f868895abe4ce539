-- Invariant: rows vanish only by cleanup, and only past retention (retention ignored)
SELECT pg_temp.mutate('cleanup_retry_queue', 'coalesce(f.completed_at, f.dead_lettered_at) < v_cutoff', 'coalesce(f.completed_at, f.dead_lettered_at) < p_now');
