-- The old bounds have no room for cancelled items: the rollback refuses while
-- any is in the queue, and says how to remove them. (Archived ones stay in
-- daz_retry_queue_archive, which has no bounds.) Guarded like the upgrade, as
-- scripts/sqlgen repeats these statements for each changed table file.
DO $$
DECLARE
    v_count bigint;
BEGIN
    IF pg_catalog.to_regclass('_retryq_finished_cancelled_idx') IS NULL THEN
        RETURN;
    END IF;
    SELECT pg_catalog.count(*) INTO v_count
    FROM _retryq_finished
    WHERE status = 'cancelled';
    IF v_count > 0 THEN
        RAISE EXCEPTION
            'retryq: cannot roll back cancel: % cancelled items are in the '
            'queue, which the previous schema cannot hold; remove them first',
            v_count
            USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'DELETE FROM daz_retry_queue WHERE status = ''cancelled'' '
            || 'removes them; SELECT * FROM cleanup_retry_queue(0) archives '
            || 'them and removes every finished item.';
    END IF;
    DROP INDEX _retryq_finished_cancelled_idx;
    ALTER TABLE daz_retry_queue DETACH PARTITION _retryq_finished;
    ALTER TABLE daz_retry_queue ATTACH PARTITION _retryq_finished
    FOR VALUES IN ('completed', 'dead_letter');
    ALTER TABLE _retryq_active
    DROP CONSTRAINT daz_retry_queue_status_check,
    ADD CONSTRAINT daz_retry_queue_status_check CHECK (
        status IN ('pending', 'processing', 'completed', 'dead_letter')
    ),
    DROP CONSTRAINT daz_retry_queue_completed_at_check,
    ADD CONSTRAINT daz_retry_queue_completed_at_check CHECK (
        (status = 'completed') = (completed_at IS NOT NULL)
    );
END;
$$;
