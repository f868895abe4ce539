-- Invariant: a private mutex taken by a transaction that holds locks never waits
SELECT pg_temp.mutate(
    '_retryq_mutex_take',
    'PERFORM _retryq_mutex_try(v_hash);',
    'INSERT INTO _retryq_mutex (name_hash) VALUES (v_hash);'
);
