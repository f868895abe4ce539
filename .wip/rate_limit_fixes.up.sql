ALTER TABLE _retryq_rate_limit
ADD COLUMN dropped_used_at timestamptz NOT NULL DEFAULT '-infinity';
