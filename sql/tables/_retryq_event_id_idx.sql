-- enqueue_retry_item_once finds an item by its event_id: an index on the
-- parent, so every partition has one.
CREATE INDEX _retryq_event_id_idx ON daz_retry_queue (event_id);

-- retryq:undo
DROP INDEX IF EXISTS _retryq_event_id_idx;
