-- Finished items stay visible through daz_retry_queue until cleanup removes
-- them, but never sit on the acquire path.
CREATE TABLE _retryq_finished PARTITION OF daz_retry_queue (
    CONSTRAINT _retryq_finished_row_check CHECK (
        _retryq_finished_row_ok(
            status, event_type, priority, max_retries, retry_count,
            retry_delay_seconds, backoff_multiplier, max_retry_delay_seconds,
            retry_jitter, event_data, event_metadata, locked_by, locked_until,
            completed_at, dead_lettered_at
        )
    )
)
FOR VALUES IN ('completed', 'dead_letter', 'cancelled');

ALTER TABLE _retryq_finished
ADD CONSTRAINT _retryq_finished_pkey PRIMARY KEY (id);

CREATE INDEX _retryq_finished_age_idx
ON _retryq_finished ((coalesce(completed_at, dead_lettered_at)));

CREATE INDEX _retryq_finished_dead_idx
ON _retryq_finished (event_type, dead_lettered_at)
WHERE status = 'dead_letter';

-- what a metrics scrape counts exactly, as it counts the dead letters
CREATE INDEX _retryq_finished_cancelled_idx
ON _retryq_finished (event_type, plugin_name)
WHERE status = 'cancelled';

-- retryq:undo
DROP TABLE _retryq_finished;
