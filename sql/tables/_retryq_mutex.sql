-- Private mutexes (_retryq_mutex): a name's row is inserted and deleted by
-- the transaction that takes it, so the table holds no live rows; the
-- uncommitted entry in the primary key is the lock, until that transaction
-- ends. They replace advisory locks, which any role may take under a key it
-- reads in pg_locks: nobody but the owner writes here (issue 12).
CREATE TABLE _retryq_mutex (
    -- sha256 of the mutex's name: bounded whatever the key's length
    name_hash bytea NOT NULL,
    CONSTRAINT _retryq_mutex_pkey PRIMARY KEY (name_hash)
);

-- retryq:undo
DROP TABLE _retryq_mutex;
