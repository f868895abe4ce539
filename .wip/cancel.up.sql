-- Cancelled items (cancel_retry_items) live in the finished partition: its
-- bounds and the table's CHECK rules learn the status 'cancelled', whose time
-- is completed_at. scripts/sqlgen repeats these statements for each changed
-- table file; the guard makes every run after the first do nothing.
DO $$
BEGIN
    IF pg_catalog.to_regclass('_retryq_finished_cancelled_idx') IS NOT NULL THEN
        RETURN;
    END IF;
    ALTER TABLE _retryq_active
    DROP CONSTRAINT daz_retry_queue_status_check,
    ADD CONSTRAINT daz_retry_queue_status_check CHECK (
        status IN (
            'pending', 'processing', 'completed', 'dead_letter', 'cancelled'
        )
    ),
    DROP CONSTRAINT daz_retry_queue_completed_at_check,
    ADD CONSTRAINT daz_retry_queue_completed_at_check CHECK (
        (status IN ('completed', 'cancelled')) = (completed_at IS NOT NULL)
    );
    -- A partition's bounds change only by detaching and attaching it again;
    -- the attach reads the finished partition once to check its rows against
    -- the new bounds, holding its lock (and the queue's) meanwhile.
    ALTER TABLE daz_retry_queue DETACH PARTITION _retryq_finished;
    ALTER TABLE daz_retry_queue ATTACH PARTITION _retryq_finished
    FOR VALUES IN ('completed', 'dead_letter', 'cancelled');
    CREATE INDEX _retryq_finished_cancelled_idx
    ON _retryq_finished (event_type, plugin_name)
    WHERE status = 'cancelled';
END;
$$;
