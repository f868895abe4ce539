-- depends: 0002_circuit_breaker
-- retryq least privilege: three NOLOGIN group roles that deployers grant to
-- their login roles.
--   retryq_producer  the guide's INSERT (with its RETURNING id, event_id) and
--                    the enqueue functions; nothing else.
--   retryq_worker    acquire, complete, fail, extend, release; SELECT on the
--                    queue and the circuits view (the Python worker reads
--                    them); no UPDATE, DELETE, requeue or cleanup.
--   retryq_admin     requeue, cleanup, circuit control; reads the queue, the
--                    archive and the views.
-- Every function that touches the tables runs as its owner (SECURITY DEFINER,
-- search_path pinned by 0001/0002), so the roles need no table rights beyond
-- the above; PUBLIC loses EXECUTE on every retryq function.
-- Roles belong to the whole cluster: they are created only when missing, and
-- installing needs CREATEROLE unless a DBA created them beforehand.

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY[
        'retryq_producer', 'retryq_worker', 'retryq_admin'
    ] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles AS r WHERE r.rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- created meanwhile by an install into another database
                NULL;
            END;
        END IF;
    END LOOP;
END;
$$;

DO $$
DECLARE
    v_fn regprocedure;
    v_name text;
    v_schema text := current_schema();
BEGIN
    EXECUTE format(
        'GRANT USAGE ON SCHEMA %I TO retryq_producer, retryq_worker, retryq_admin',
        v_schema
    );
    FOR v_fn, v_name IN
        SELECT p.oid::regprocedure, p.proname
        FROM pg_proc AS p
        WHERE p.pronamespace = (
            SELECT n.oid FROM pg_namespace AS n WHERE n.nspname = v_schema
        )
            AND (
                p.proname LIKE '\_retryq\_%'
                OR p.proname IN (
                    'retry_queue_channel', 'enqueue_retry_item',
                    'enqueue_retry_items', 'acquire_retry_items',
                    'complete_retry_item', 'complete_retry_items',
                    'fail_retry_item', 'extend_retry_lock',
                    'release_retry_items', 'requeue_dead_letter_items',
                    'cleanup_retry_queue', 'retry_circuit_open',
                    'retry_circuit_close', 'retry_circuit_configure'
                )
            )
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);
        -- the LISTEN channel's name; the insert trigger calls it too
        IF v_name = 'retry_queue_channel' THEN
            EXECUTE format(
                'GRANT EXECUTE ON FUNCTION %s'
                ' TO retryq_producer, retryq_worker, retryq_admin',
                v_fn
            );
        ELSIF v_name NOT LIKE '\_retryq\_%' THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', v_fn);
            EXECUTE format(
                'GRANT EXECUTE ON FUNCTION %s TO %I', v_fn,
                CASE
                    WHEN v_name IN ('enqueue_retry_item', 'enqueue_retry_items')
                        THEN 'retryq_producer'
                    WHEN v_name IN (
                        'acquire_retry_items', 'complete_retry_item',
                        'complete_retry_items', 'fail_retry_item',
                        'extend_retry_lock', 'release_retry_items'
                    ) THEN 'retryq_worker'
                    ELSE 'retryq_admin'
                END
            );
        END IF;
    END LOOP;
END;
$$;

-- The guide's INSERT ... RETURNING id, event_id needs SELECT on exactly those
-- two columns, and the id default needs the sequence.
GRANT INSERT ON daz_retry_queue TO retryq_producer;
GRANT SELECT (id, event_id) ON daz_retry_queue TO retryq_producer;
GRANT USAGE ON SEQUENCE daz_retry_queue_id_seq TO retryq_producer;

-- The queue and its circuits: the Python worker reads the queue to know how
-- long to sleep, and its --metrics-port serves the queue's metrics too.
GRANT SELECT ON daz_retry_queue, daz_retry_queue_circuits TO retryq_worker;

GRANT SELECT ON daz_retry_queue, daz_retry_queue_archive TO retryq_admin;
GRANT SELECT ON daz_retry_queue_stats, daz_retry_queue_alerts,
daz_retry_queue_circuits TO retryq_admin;
