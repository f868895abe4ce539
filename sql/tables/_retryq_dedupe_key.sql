-- Dedupe keys: an optional key a producer gives an item so that, among live
-- (pending and processing) items, a key exists at most once. A second enqueue
-- of a live key returns the live item (the enqueue functions) or is refused
-- with 23505 naming dedupe_key (the guide's INSERT, a COPY). Once the item
-- finishes (completed, dead letter, cancelled) the key is free again: the unique index
-- covers the active partition only, and a row leaves it by DELETE+INSERT
-- (see tables/daz_retry_queue.sql), so the finished and archived copies keep
-- their key without holding it.
-- Added here, after the archive (LIKE daz_retry_queue, then archived_at), so
-- that both tables gain the column last in a fresh install as in an upgrade
-- (the catalogs are compared column by column). A later column of either
-- table goes in a file like this one, after it in the manifest.
-- Bounds (200 characters, not blank) are checked by _retryq_inserted for
-- every inserting statement: a btree entry holds at most about 2.7 kB.
ALTER TABLE daz_retry_queue ADD COLUMN dedupe_key text;

ALTER TABLE daz_retry_queue_archive ADD COLUMN dedupe_key text;

-- The rule itself: two producers inserting one key at once cannot both win
-- (the second waits for the first's commit, then fails with 23505).
CREATE UNIQUE INDEX daz_retry_queue_dedupe_key_idx
ON _retryq_active (dedupe_key)
WHERE dedupe_key IS NOT NULL;

-- The guide's INSERT and add_many's COPY may set it.
GRANT INSERT (dedupe_key) ON daz_retry_queue TO retryq_producer;

-- retryq:undo
DROP INDEX daz_retry_queue_dedupe_key_idx;
ALTER TABLE daz_retry_queue_archive DROP COLUMN dedupe_key;
ALTER TABLE daz_retry_queue DROP COLUMN dedupe_key;
