ALTER TABLE _retryq_rate_limit DROP COLUMN dropped_used_at;
