-- Removes everything 0001_core created.
DROP VIEW daz_retry_queue_alerts;
DROP VIEW daz_retry_queue_stats;
DROP FUNCTION cleanup_retry_queue(integer, integer, bigint, boolean, timestamptz);
DROP FUNCTION requeue_dead_letter_items(
    bigint[], text, text, text, timestamptz, timestamptz
);
DROP FUNCTION release_retry_items(bigint[], text);
DROP FUNCTION extend_retry_lock(bigint, text, integer, timestamptz);
DROP FUNCTION fail_retry_item(bigint, text, text, text, boolean, timestamptz);
DROP FUNCTION complete_retry_item(bigint, text, timestamptz);
DROP FUNCTION complete_retry_items(bigint[], text, timestamptz);
DROP FUNCTION acquire_retry_items(text, integer, integer, timestamptz);
DROP FUNCTION enqueue_retry_items(jsonb, timestamptz);
DROP FUNCTION enqueue_retry_item(
    text, jsonb, text, text, jsonb, integer, double precision,
    double precision, integer, text, text[], double precision,
    double precision, double precision, timestamptz
);
DROP FUNCTION _retryq_bury(bigint[], jsonb, timestamptz);
DROP FUNCTION _retryq_backoff(
    integer, double precision, double precision, double precision,
    double precision
);
DROP FUNCTION _retryq_check_worker(text);
DROP TRIGGER daz_retry_queue_notify ON daz_retry_queue;
DROP FUNCTION _retryq_notify_insert();
DROP FUNCTION retry_queue_channel();
DROP TABLE daz_retry_queue_archive;
DROP TABLE daz_retry_queue;
DROP FUNCTION _retryq_check(boolean, text, text);
