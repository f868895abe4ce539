-- Undoes 0003_roles in this database: the grants go, PUBLIC may execute the
-- functions again, and they run with the caller's rights again.
-- The roles themselves belong to the cluster. They are dropped only when
-- nothing uses them any more: no object or grant in any database (another
-- database, or another schema here, may hold a retryq install that uses them)
-- and no member (a login role a deployer granted them to, which would
-- silently lose its rights). Otherwise they stay, harmless and empty here.

REVOKE SELECT ON daz_retry_queue_stats, daz_retry_queue_alerts,
daz_retry_queue_circuits FROM retryq_admin;
REVOKE SELECT ON daz_retry_queue, daz_retry_queue_archive FROM retryq_admin;
REVOKE SELECT ON daz_retry_queue, daz_retry_queue_circuits FROM retryq_worker;
REVOKE USAGE ON SEQUENCE daz_retry_queue_id_seq FROM retryq_producer;
REVOKE SELECT (id, event_id) ON daz_retry_queue FROM retryq_producer;
REVOKE INSERT ON daz_retry_queue FROM retryq_producer;

DO $$
DECLARE
    v_fn regprocedure;
    v_name text;
    v_schema text := current_schema();
BEGIN
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
        EXECUTE format(
            'REVOKE EXECUTE ON FUNCTION %s'
            ' FROM retryq_producer, retryq_worker, retryq_admin',
            v_fn
        );
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', v_fn);
        IF v_name NOT LIKE '\_retryq\_%' THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER', v_fn);
        END IF;
    END LOOP;
    EXECUTE format(
        'REVOKE USAGE ON SCHEMA %I FROM retryq_producer, retryq_worker, retryq_admin',
        v_schema
    );
END;
$$;

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY[
        'retryq_producer', 'retryq_worker', 'retryq_admin'
    ] LOOP
        IF NOT EXISTS (
            SELECT 1
            FROM pg_shdepend AS d
            WHERE d.refclassid = 'pg_authid'::regclass
                AND d.refobjid = (
                    SELECT r.oid FROM pg_roles AS r WHERE r.rolname = v_role
                )
        )
            AND NOT EXISTS (
                SELECT 1
                FROM pg_auth_members AS m
                INNER JOIN pg_roles AS r ON m.roleid = r.oid
                WHERE r.rolname = v_role
                    -- PostgreSQL 16+ makes a non-superuser creator a member
                    AND m.member <> (
                        SELECT u.oid FROM pg_roles AS u WHERE u.rolname = current_user
                    )
            ) THEN
            EXECUTE format('DROP ROLE IF EXISTS %I', v_role);
        END IF;
    END LOOP;
END;
$$;
