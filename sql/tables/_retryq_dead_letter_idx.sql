-- The dead-letter searches an on-call engineer makes at 1M finished rows
-- (the dashboard's items and dead-letter screens, list_dead_letter_items,
-- requeue and purge by filter): by correlation id and by error code, the
-- latter with the age filter as its second column. Without them each walks
-- the whole finished partition (1.5 to 2 s at 1M rows on a loaded machine;
-- scripts/bench_dashboard.py). Partial: a completion writes no entry (the
-- predicate is all it pays), only a dead letter does. By event type:
-- _retryq_finished_dead_idx. An age filter alone has no index of its own: it
-- selects a large share of the dead letters, and an index on
-- dead_lettered_at made list_dead_letter_items five times slower (its
-- ordered walk checks each row against the whole list of matching ids).
CREATE INDEX _retryq_dead_correlation_idx
ON _retryq_dead_cancelled (correlation_id)
WHERE status = 'dead_letter';

CREATE INDEX _retryq_dead_code_idx
ON _retryq_dead_cancelled (last_error_code, dead_lettered_at)
WHERE status = 'dead_letter';

-- retryq:undo
DROP INDEX IF EXISTS _retryq_dead_code_idx;
DROP INDEX IF EXISTS _retryq_dead_correlation_idx;
