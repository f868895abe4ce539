-- Puts the CHECK constraints back on daz_retry_queue, and the active
-- partition's fillfactor back to 70, as 0001 made them.
ALTER TABLE _retryq_active SET (fillfactor = 70);

ALTER TABLE _retryq_finished DROP CONSTRAINT _retryq_finished_row_check;

DROP FUNCTION _retryq_finished_row_ok(
    text, text, integer, integer, integer, double precision, double precision,
    double precision, double precision, jsonb, jsonb, text, timestamptz,
    timestamptz, timestamptz
);

ALTER TABLE _retryq_active
DROP CONSTRAINT daz_retry_queue_status_check,
DROP CONSTRAINT daz_retry_queue_event_type_check,
DROP CONSTRAINT daz_retry_queue_priority_check,
DROP CONSTRAINT daz_retry_queue_max_retries_check,
DROP CONSTRAINT daz_retry_queue_retry_count_check,
DROP CONSTRAINT daz_retry_queue_retry_delay_seconds_check,
DROP CONSTRAINT daz_retry_queue_backoff_multiplier_check,
DROP CONSTRAINT daz_retry_queue_max_retry_delay_seconds_check,
DROP CONSTRAINT daz_retry_queue_retry_jitter_check,
DROP CONSTRAINT daz_retry_queue_event_data_check,
DROP CONSTRAINT daz_retry_queue_event_metadata_check,
DROP CONSTRAINT daz_retry_queue_lease_check,
DROP CONSTRAINT daz_retry_queue_completed_at_check,
DROP CONSTRAINT daz_retry_queue_dead_lettered_at_check;

ALTER TABLE daz_retry_queue
ADD CONSTRAINT daz_retry_queue_status_check CHECK (
    status IN ('pending', 'processing', 'completed', 'dead_letter')
),
ADD CONSTRAINT daz_retry_queue_event_type_check CHECK (
    length(event_type) <= 200 AND event_type ~ '[^[:space:]]'
),
ADD CONSTRAINT daz_retry_queue_priority_check CHECK (priority BETWEEN 1 AND 10),
ADD CONSTRAINT daz_retry_queue_max_retries_check CHECK (
    max_retries BETWEEN 0 AND 1000
),
ADD CONSTRAINT daz_retry_queue_retry_count_check CHECK (
    retry_count BETWEEN 0 AND max_retries
),
ADD CONSTRAINT daz_retry_queue_retry_delay_seconds_check CHECK (
    retry_delay_seconds BETWEEN 0 AND 31536000
),
ADD CONSTRAINT daz_retry_queue_backoff_multiplier_check CHECK (
    backoff_multiplier BETWEEN 1 AND 10
),
ADD CONSTRAINT daz_retry_queue_max_retry_delay_seconds_check CHECK (
    max_retry_delay_seconds BETWEEN 0 AND 31536000
),
ADD CONSTRAINT daz_retry_queue_retry_jitter_check CHECK (
    retry_jitter BETWEEN 0 AND 1
),
ADD CONSTRAINT daz_retry_queue_event_data_check CHECK (
    jsonb_typeof(event_data) <> 'null'
),
ADD CONSTRAINT daz_retry_queue_event_metadata_check CHECK (
    jsonb_typeof(event_metadata) = 'object'
),
ADD CONSTRAINT daz_retry_queue_lease_check CHECK (
    (status = 'processing') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)
),
ADD CONSTRAINT daz_retry_queue_completed_at_check CHECK (
    (status = 'completed') = (completed_at IS NOT NULL)
),
ADD CONSTRAINT daz_retry_queue_dead_lettered_at_check CHECK (
    (status = 'dead_letter') = (dead_lettered_at IS NOT NULL)
);
