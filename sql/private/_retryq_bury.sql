-- Moves the given active rows to the finished partition as dead letters,
-- appending p_entry (with its attempt number filled in) to each history.
-- Callers hold the row locks.
-- An id the queue already used for a finished or archived item cannot arrive
-- through the door (_retryq_inserted), but should such a row exist anyway
-- (triggers disabled by a superuser), its move would fail with 23505 and with
-- it every acquire that buries it: it is buried under a new id from the
-- sequence instead, the old one kept in its metadata (retryq_former_id). One
-- probe of each primary key per call, on this cold path only.
CREATE OR REPLACE FUNCTION _retryq_bury(
    p_ids bigint[],
    p_entry jsonb,
    p_now timestamptz
)
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
    v_old bigint;
    v_new bigint;
BEGIN
    FOR v_old IN
        SELECT a.id FROM _retryq_active AS a
        WHERE a.id = ANY(p_ids)
            AND (
                EXISTS (SELECT 1 FROM _retryq_finished AS f WHERE f.id = a.id)
                OR EXISTS (
                    SELECT 1 FROM daz_retry_queue_archive AS r WHERE r.id = a.id
                )
            )
    LOOP
        LOOP
            v_new := pg_catalog.nextval('daz_retry_queue_id_seq');
            EXIT WHEN NOT EXISTS (SELECT 1 FROM daz_retry_queue AS q WHERE q.id = v_new)
                AND NOT EXISTS (
                    SELECT 1 FROM daz_retry_queue_archive AS r WHERE r.id = v_new
                );
        END LOOP;
        UPDATE _retryq_active AS a
        SET
            id = v_new,
            event_metadata = a.event_metadata
            || pg_catalog.jsonb_build_object('retryq_former_id', v_old)
        WHERE a.id = v_old;
        p_ids := pg_catalog.array_replace(p_ids, v_old, v_new);
    END LOOP;
    SELECT pg_catalog.count(*)::integer INTO v_count
    FROM _retryq_finish(p_ids, 'dead_letter', p_now, NULL, p_entry);
    RETURN v_count;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_bury FROM public;
