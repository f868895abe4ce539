-- Finished items stay visible through daz_retry_queue until cleanup removes
-- them, but never sit on the acquire path.
-- No CHECK constraint: PostgreSQL reads every CHECK anew from the catalog in
-- each statement that writes a row, and the one that called
-- _retryq_finished_row_ok was over a quarter of every completion's server
-- work (callgrind, instructions: 505,000 with it and 365,000 without per
-- complete_retry_item; 85,000 and 63,000 per item of complete_retry_items).
-- The functions move rows here that the active partition's rules already
-- held, setting only the finish columns. A finished row written any other
-- way (only the owner may set a status) is held to the same rules, refused
-- under the same names, by _retryq_inserted (an INSERT into daz_retry_queue)
-- and _retryq_finished_updated (an UPDATE); the partition itself is private,
-- written by the functions only.
-- Two leaves by status: the completions insert into _retryq_completed, which
-- has no partial index. PostgreSQL prepares the predicate of every partial
-- index of a table in each statement that inserts there: the dead-letter
-- and cancelled indexes, on one partition with the completed rows, were 7%
-- of every complete_retry_item (callgrind: 374,000 instructions a call with
-- them, 349,000 without).
CREATE TABLE _retryq_finished PARTITION OF daz_retry_queue
FOR VALUES IN ('completed', 'dead_letter', 'cancelled')
PARTITION BY LIST (status);

CREATE TABLE _retryq_completed PARTITION OF _retryq_finished
FOR VALUES IN ('completed');

CREATE TABLE _retryq_dead_cancelled PARTITION OF _retryq_finished
FOR VALUES IN ('dead_letter', 'cancelled');

-- One key per leaf (a partitioned table's key must hold the partition key):
-- an INSERT of an id the other leaf holds is refused by _retryq_inserted; an
-- UPDATE that moves a row onto one, by that leaf's key (named as the public
-- key by _retryq_finished_updated).
ALTER TABLE _retryq_completed
ADD CONSTRAINT _retryq_completed_pkey PRIMARY KEY (id);

ALTER TABLE _retryq_dead_cancelled
ADD CONSTRAINT _retryq_dead_cancelled_pkey PRIMARY KEY (id);

CREATE INDEX _retryq_finished_age_idx
ON _retryq_finished ((coalesce(completed_at, dead_lettered_at)));

CREATE INDEX _retryq_finished_dead_idx
ON _retryq_dead_cancelled (event_type, dead_lettered_at)
WHERE status = 'dead_letter';

-- what a metrics scrape counts exactly, as it counts the dead letters
CREATE INDEX _retryq_finished_cancelled_idx
ON _retryq_dead_cancelled (event_type, plugin_name)
WHERE status = 'cancelled';

-- retryq:undo
DROP TABLE _retryq_finished;
