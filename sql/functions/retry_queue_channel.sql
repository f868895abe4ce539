-- The LISTEN channel for "an item is due now": the install schema and the
-- table name, e.g. "public.daz_retry_queue". A channel name holds at most 63
-- bytes, so a schema name longer than 47 bytes gives "retryq.<schema oid>"
-- instead (pg_notify would refuse the long one, and every INSERT with it).
CREATE OR REPLACE FUNCTION retry_queue_channel()
RETURNS text
-- PL/pgSQL, not SQL: a SQL function with a SET clause (the pinned
-- search_path) cannot be inlined and is planned anew in every transaction.
LANGUAGE plpgsql
STABLE
-- no jit = off: it reads no table, so JIT never starts (and the insert
-- trigger that calls it runs without JIT already)
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN CASE
        WHEN pg_catalog.octet_length(pg_catalog.current_schema()) <= 47
            THEN pg_catalog.current_schema()::text || '.daz_retry_queue'
        ELSE 'retryq.' || (
            SELECT n.oid::text FROM pg_namespace AS n
            WHERE n.nspname = pg_catalog.current_schema()
        )
    END;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_queue_channel FROM public;
-- the LISTEN channel's name: every role may ask it; the insert trigger
-- calls it too
GRANT EXECUTE ON FUNCTION retry_queue_channel
TO retryq_producer, retryq_worker, retryq_admin;
