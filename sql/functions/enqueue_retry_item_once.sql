-- Adds one item under an event id the caller chose, unless an item with that
-- event_id is already in the queue (in any status): then it returns that
-- item with inserted false and writes nothing, reading no other parameter
-- (they are checked when the item is added). A producer that lost the
-- reply to an enqueue (a connection cut, a failover) calls it again with the
-- same p_event_id and gets one item, never two, at every isolation level:
-- under REPEATABLE READ or SERIALIZABLE a live item committed after the
-- transaction's snapshot is refused with 40001 (retry the transaction). The
-- guarantee lasts while the first item is in daz_retry_queue (until
-- cleanup_retry_queue or a purge removes it), with one gap: an item that
-- also finished after an older snapshot is seen by neither the lookup nor
-- the live items' unique index, so call it as the transaction's first
-- statement or under READ COMMITTED. The other parameters are
-- enqueue_retry_item's.
-- p_dedupe_key adds enqueue_retry_item's rule: when no item has p_event_id
-- but a live item holds the key, that item comes back (its own event_id)
-- with inserted false. The event id guards against a repeated call (until
-- cleanup); the key, against a second live item for the same work.
-- A call waits for another transaction adding the same p_event_id only while
-- its own transaction holds no lock yet (has written nothing); otherwise it
-- refuses with 55P03 lock_not_available rather than risk a deadlock.
CREATE OR REPLACE FUNCTION enqueue_retry_item_once(
    p_event_id uuid,
    p_event_type text,
    p_event_data jsonb,
    p_channel_name text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_event_metadata jsonb DEFAULT '{}',
    p_max_retries bigint DEFAULT 3,
    p_retry_delay_seconds double precision DEFAULT 60,
    p_backoff_multiplier double precision DEFAULT 2.0,
    p_priority bigint DEFAULT 5,
    p_correlation_id text DEFAULT NULL,
    p_tags text[] DEFAULT '{}',
    p_delay_seconds double precision DEFAULT 0,
    p_max_retry_delay_seconds double precision DEFAULT 86400,
    p_retry_jitter double precision DEFAULT 0,
    p_now timestamptz DEFAULT now(),
    p_dedupe_key text DEFAULT NULL
)
RETURNS TABLE (id bigint, event_id uuid, inserted boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id bigint;
    v_event_id uuid;
    v_deduplicated boolean;
    v_constraint text;
BEGIN
    PERFORM _retryq_check(p_event_id IS NOT NULL, 'event_id', 'must not be null');
    -- an id already there (the usual repeat) needs no turn, and so writes
    -- nothing, not even a lock
    SELECT q.id INTO v_id
    FROM daz_retry_queue AS q
    WHERE q.event_id = p_event_id
    LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT v_id, p_event_id, FALSE;
        RETURN;
    END IF;
    -- Two calls with one event id take turns (until the first commits), so
    -- the second sees the first's row under READ COMMITTED (for the other
    -- levels, see the unique violation below). The turn is a mutex
    -- only the owner can take (an advisory lock, before, let any role hang
    -- these calls), and it is waited for only while this transaction holds
    -- nothing (the lock order of _retryq_circuit_lock): one that holds locks
    -- is refused instead, since the holder may be waiting for it.
    IF NOT _retryq_mutex_take(
        'enqueue'::text || pg_catalog.chr(31) || p_event_id::text,
        pg_catalog.pg_current_xact_id_if_assigned() IS NULL
    ) THEN
        RAISE EXCEPTION 'retryq: event_id % is being added by another transaction', p_event_id
            USING ERRCODE = 'lock_not_available',
            HINT = 'Retry, or add items once before anything else in the transaction.';
    END IF;
    -- again: added by the transaction this one took turns with
    SELECT q.id INTO v_id
    FROM daz_retry_queue AS q
    WHERE q.event_id = p_event_id
    LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT v_id, p_event_id, FALSE;
        RETURN;
    END IF;
    -- enqueue_retry_item's rules (defaults, checks, clock, NOTIFY, dedupe
    -- key), then the caller's event id on the new row (pending: the active
    -- partition). A live item that this snapshot cannot see (a REPEATABLE
    -- READ transaction older than its commit) or that a plain INSERT gave
    -- this event id holds it in daz_retry_queue_event_id_unique: the block
    -- undoes the new row, and the holder comes back, or 40001 when this
    -- snapshot cannot see it.
    BEGIN
        SELECT e.id, e.event_id, e.deduplicated
        INTO v_id, v_event_id, v_deduplicated
        FROM enqueue_retry_item(
            p_event_type, p_event_data, p_channel_name, p_plugin_name,
            p_event_metadata, p_max_retries, p_retry_delay_seconds,
            p_backoff_multiplier, p_priority, p_correlation_id, p_tags,
            p_delay_seconds, p_max_retry_delay_seconds, p_retry_jitter, p_now,
            p_dedupe_key
        ) AS e;
        IF NOT v_deduplicated THEN
            UPDATE _retryq_active AS a SET event_id = p_event_id WHERE a.id = v_id;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
        IF v_constraint IS DISTINCT FROM 'daz_retry_queue_event_id_unique' THEN
            RAISE;
        END IF;
        SELECT q.id INTO v_id
        FROM daz_retry_queue AS q
        WHERE q.event_id = p_event_id
        LIMIT 1;
        IF FOUND THEN
            RETURN QUERY SELECT v_id, p_event_id, FALSE;
            RETURN;
        END IF;
        RAISE EXCEPTION
            'retryq: event_id % is held by an item this transaction cannot see',
            p_event_id
            USING ERRCODE = 'serialization_failure', COLUMN = 'event_id',
                HINT = 'Retry the transaction (or enqueue under READ COMMITTED).';
    END;
    IF v_deduplicated THEN
        RETURN QUERY SELECT v_id, v_event_id, FALSE;
        RETURN;
    END IF;
    RETURN QUERY SELECT v_id, p_event_id, TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION enqueue_retry_item_once FROM public;
GRANT EXECUTE ON FUNCTION enqueue_retry_item_once TO retryq_producer;
