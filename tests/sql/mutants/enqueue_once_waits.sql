-- Invariant: enqueue_retry_item_once waits for another transaction's turn on an
-- event id only while its own transaction holds no lock (else 55P03)
SELECT pg_temp.mutate(
    'enqueue_retry_item_once',
    'pg_catalog.pg_current_xact_id_if_assigned() IS NULL',
    'TRUE'
);
