-- An UPDATE of a finished row (the owner's: no role may UPDATE the queue, and
-- no function updates a finished row) is held to the rules the partition's
-- CHECK constraint used to give it, refused by _retryq_finished_row_ok under
-- the active partition's constraint names. A row trigger on UPDATE only: the
-- moves into the partition are INSERTs and never fire it (see
-- tables/_retryq_finished.sql).
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
