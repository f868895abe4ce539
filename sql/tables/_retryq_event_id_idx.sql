-- enqueue_retry_item_once finds an item by its event_id, in either partition.
-- Among live items an event id exists at most once: two producers enqueueing
-- one event id at once cannot both win, whatever their isolation level (the
-- second waits for the first's commit, then fails with 23505 naming
-- daz_retry_queue_event_id_unique, which enqueue_retry_item_once turns into
-- the first's item or 40001). Like the dedupe key, a finished item's event id
-- is not held: a row leaves the active partition by DELETE+INSERT (see
-- tables/daz_retry_queue.sql), so the unique index covers that partition only.
ALTER TABLE _retryq_active
ADD CONSTRAINT daz_retry_queue_event_id_unique UNIQUE (event_id);

-- A hash index: every search here is by equality, and every completion writes
-- an entry, which a btree placed by comparing uuids down the tree (a random
-- leaf each time) and a hash index by one hash (callgrind: 2,700 instructions
-- less per item of complete_retry_items, 4%; the same WAL).
CREATE INDEX _retryq_finished_event_id_idx ON _retryq_finished USING hash (event_id);

-- retryq:undo
DROP INDEX IF EXISTS _retryq_finished_event_id_idx;
ALTER TABLE _retryq_active DROP CONSTRAINT IF EXISTS daz_retry_queue_event_id_unique;
