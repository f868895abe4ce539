-- Wakes listening workers once per inserting statement, not once per row.
CREATE OR REPLACE FUNCTION _retryq_notify_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pg_notify(retry_queue_channel(), 'insert');
    RETURN NULL;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_notify_insert FROM public;

CREATE OR REPLACE TRIGGER daz_retry_queue_notify
AFTER INSERT ON daz_retry_queue
FOR EACH STATEMENT EXECUTE FUNCTION _retryq_notify_insert();

-- retryq:undo
DROP TRIGGER daz_retry_queue_notify ON daz_retry_queue;
DROP FUNCTION _retryq_notify_insert;
