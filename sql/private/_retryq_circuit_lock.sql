-- Locks a key's circuit row for this transaction, creating it when the key
-- has none; false when it cannot without risking a deadlock.
--
-- The lock order (issue 12, item 5). A deadlock needs a cycle of transactions
-- each waiting for a lock another one holds. The functions wait only in these
-- places, and each is safe:
--  * A circuit row (and the mutex of its key, _retryq_mutex_take, which
--    every insert of a circuit row takes first, so that nobody waits for
--    another transaction's uncommitted insert) is waited for only while this
--    transaction holds no lock at all (no transaction id yet: every lock the
--    functions take, row or mutex, assigns one): a transaction that holds
--    nothing has nobody waiting for it, so it cannot be part of a cycle. That
--    is why fail_retry_item locks its circuit row before its item, and why a
--    transaction that already wrote skips the books of a circuit another
--    transaction holds (the count is then one short) and an operator's
--    circuit function in such a transaction refuses with 55P03 instead of
--    waiting.
--  * An item row is waited for only by fail, complete(s), extend and release,
--    only for an item the snapshot shows leased to the caller's worker id,
--    and only while this transaction has taken over no expired lease and
--    cancelled no leased item (acquire and cancel_retry_items set
--    retryq.took_over). The other holder is then a transaction of the same
--    worker id, an acquire that took the lease over or a cancel, and a
--    transaction that took over or cancelled a lease never waits again.
--    acquire and cancel_retry_items themselves never wait (SKIP LOCKED).
--  * Finished rows (requeue, purge, cleanup) are never waited for: all three
--    take them with SKIP LOCKED.
--  * A pause's or a rate limit's key (retry_queue_pause and _resume,
--    retry_rate_limit_set and _clear), and an event id being added by
--    enqueue_retry_item_once, are waited for the same way as a circuit:
--    only while the transaction holds nothing (see _retryq_key_lock); a
--    rate limit's tokens, which an acquire holds until
--    its transaction ends, are then waited for only by a transaction that
--    held nothing before, and taken only when free by one that did.
-- So a cycle can only run through transactions of one worker id touching
-- the same items in different orders (within one call, items are locked in
-- id order), or through a dedupe key's unique index (PostgreSQL makes an
-- insert of a key wait for another transaction's uncommitted insert of it;
-- the README says when that can close a cycle); two calls of the API, or
-- transactions of different worker ids that add no dedupe-keyed item, never
-- deadlock.
-- No lock here is one that a role outside retryq can take: row locks need
-- UPDATE on the table and the mutexes need INSERT on _retryq_mutex, which only
-- the owner has (advisory locks, used before, did not: issue 12).
CREATE OR REPLACE FUNCTION _retryq_circuit_lock(
    p_event_type text,
    p_plugin_name text
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_mutex text := 'circuit'::text || pg_catalog.chr(31) || p_event_type
        || pg_catalog.chr(31) || p_plugin_name;
BEGIN
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NULL THEN
        -- nothing held yet: waiting is safe
        PERFORM 1 FROM _retryq_circuit AS c
        WHERE c.event_type = p_event_type AND c.plugin_name = p_plugin_name
        FOR UPDATE;
        IF FOUND THEN
            RETURN TRUE;
        END IF;
        -- a new key (this transaction still holds nothing): its mutex, then
        -- an INSERT that waits for nobody
        PERFORM _retryq_mutex_take(v_mutex, TRUE);
        INSERT INTO _retryq_circuit (event_type, plugin_name)
        VALUES (p_event_type, p_plugin_name)
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM _retryq_circuit AS c
        WHERE c.event_type = p_event_type AND c.plugin_name = p_plugin_name
        FOR UPDATE;
        RETURN TRUE;
    END IF;
    PERFORM 1 FROM _retryq_circuit AS c
    WHERE c.event_type = p_event_type AND c.plugin_name = p_plugin_name
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        RETURN TRUE;
    END IF;
    IF EXISTS (
        SELECT 1 FROM _retryq_circuit AS c
        WHERE c.event_type = p_event_type AND c.plugin_name = p_plugin_name
    ) THEN
        RETURN FALSE;  -- another transaction holds the row
    END IF;
    -- a new key: whoever inserts it holds the key's mutex until it commits,
    -- so once this one has it the INSERT below waits for nobody
    IF NOT _retryq_mutex_take(v_mutex, FALSE) THEN
        RETURN FALSE;
    END IF;
    INSERT INTO _retryq_circuit (event_type, plugin_name)
    VALUES (p_event_type, p_plugin_name)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN TRUE;
    END IF;
    -- committed by another transaction since this statement's snapshot
    PERFORM 1 FROM _retryq_circuit AS c
    WHERE c.event_type = p_event_type AND c.plugin_name = p_plugin_name
    FOR UPDATE SKIP LOCKED;
    RETURN FOUND;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_circuit_lock FROM public;
