-- Invariant: rows appear only by enqueue (requeue copies the dead letter instead of moving it)
SELECT pg_temp.mutate('requeue_dead_letter_items', 'DELETE FROM _retryq_finished AS f', 'UPDATE _retryq_finished AS f SET tags = f.tags');
