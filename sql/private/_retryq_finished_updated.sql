-- An UPDATE of a finished row (the owner's: no role may UPDATE the queue, and
-- no function updates a finished row) is held to the rules the partition's
-- CHECK constraint used to give it, refused by _retryq_finished_row_ok under
-- the active partition's constraint names. A row trigger on UPDATE only: the
-- moves into the partition are INSERTs and never fire it (see
-- tables/_retryq_finished.sql). On the partitioned table: PostgreSQL gives
-- each leaf its copy.
CREATE OR REPLACE FUNCTION _retryq_finished_updated()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM _retryq_finished_row_ok(
        NEW.status, NEW.event_type, NEW.priority, NEW.max_retries,
        NEW.retry_count, NEW.retry_delay_seconds, NEW.backoff_multiplier,
        NEW.max_retry_delay_seconds, NEW.retry_jitter, NEW.event_data,
        NEW.event_metadata, NEW.locked_by, NEW.locked_until, NEW.completed_at,
        NEW.dead_lettered_at
    );
    -- a row moving to the other leaf (completed, or dead letter and
    -- cancelled) onto an id that leaf holds: that leaf's key would refuse it
    -- under its private name; refused here as _retryq_inserted refuses an id
    -- reused (see tables/_retryq_finished.sql)
    IF (NEW.status = 'completed') <> (OLD.status = 'completed') AND EXISTS (
        SELECT 1 FROM _retryq_finished AS f
        WHERE f.id = NEW.id AND (f.status = 'completed') = (NEW.status = 'completed')
    ) THEN
        RAISE EXCEPTION
            'retryq: duplicate id: % is the id of a finished item', NEW.id
            USING ERRCODE = 'unique_violation', COLUMN = 'id',
                TABLE = 'daz_retry_queue', CONSTRAINT = 'daz_retry_queue_id_unique';
    END IF;
    RETURN NEW;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_finished_updated FROM public;

CREATE OR REPLACE TRIGGER _retryq_finished_updated
BEFORE UPDATE ON _retryq_finished
FOR EACH ROW
EXECUTE FUNCTION _retryq_finished_updated();

-- retryq:undo
DROP TRIGGER _retryq_finished_updated ON _retryq_finished;
DROP FUNCTION _retryq_finished_updated;
