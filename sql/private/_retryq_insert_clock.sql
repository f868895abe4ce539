-- A new active row's times, for a role that may not write the queue's rows
-- (a producer's INSERT or COPY): created_at is the server's clock (this
-- statement's time, the column's default, or at most a minute before it, as
-- add_many's first step takes it) and next_retry_at lies between created_at
-- and the enqueue delay bound after it, so that no producer jumps the queue
-- with an old due time or parks an item out of reach. The bound is the
-- statement's time, not now(): a transaction kept open for an hour would
-- otherwise date its items an hour back. The trigger's WHEN calls it only for
-- a row outside those bounds. A role that may UPDATE daz_retry_queue (its
-- owner, and the SECURITY DEFINER functions that run as the owner: the
-- enqueue functions, a requeue) writes any time it likes.
-- Not SECURITY DEFINER: current_user must be the role that inserts.
CREATE OR REPLACE FUNCTION _retryq_insert_clock()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF pg_catalog.has_table_privilege('daz_retry_queue', 'UPDATE') THEN
        RETURN NEW;
    END IF;
    IF NEW.created_at > statement_timestamp()
        OR NEW.created_at < statement_timestamp() - interval '1 minute' THEN
        RAISE EXCEPTION
            'retryq: invalid created_at: must be within the minute before the statement''s time, not after it (leave it out: the server sets it)'
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'created_at';
    END IF;
    RAISE EXCEPTION
        'retryq: invalid next_retry_at: must be created_at plus a delay between 0 and 31536000 seconds'
        USING ERRCODE = 'invalid_parameter_value', COLUMN = 'next_retry_at';
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_insert_clock FROM public;

CREATE OR REPLACE TRIGGER _retryq_2_clock
BEFORE INSERT ON _retryq_active
FOR EACH ROW
WHEN (
    new.created_at > statement_timestamp()
    OR new.created_at < statement_timestamp() - interval '1 minute'
    OR new.next_retry_at < new.created_at
    OR new.next_retry_at > new.created_at + interval '31536000 seconds'
)
EXECUTE FUNCTION _retryq_insert_clock();

-- retryq:undo
DROP TRIGGER _retryq_2_clock ON _retryq_active;
DROP FUNCTION _retryq_insert_clock;
