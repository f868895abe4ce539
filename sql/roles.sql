-- The three NOLOGIN group roles that deployers grant to their login roles:
--   retryq_producer  the guide's INSERT (with its RETURNING id, event_id) and
--                    the enqueue functions; nothing else.
--   retryq_worker    acquire, complete, fail, extend, release; SELECT on the
--                    queue and the circuits view (the Python worker reads
--                    them); no UPDATE, DELETE, requeue or cleanup.
--   retryq_admin     requeue, purge, cleanup, circuit control; reads the
--                    queue, the archive and the views.
-- Every object's file grants what may be done with it. The functions that
-- write run as their owner (SECURITY DEFINER, search_path pinned), so the
-- roles need no table rights beyond the few granted next to the tables.
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
BEGIN
    EXECUTE format(
        'GRANT USAGE ON SCHEMA %I TO retryq_producer, retryq_worker, retryq_admin',
        current_schema()
    );
END;
$$;

-- retryq:undo
-- The roles are dropped only when nothing uses them any more: no object or
-- grant in any database (another database, or another schema here, may hold a
-- retryq install that uses them) and no member (a login role a deployer
-- granted them to, which would silently lose its rights).
DO $$
BEGIN
    EXECUTE format(
        'REVOKE USAGE ON SCHEMA %I FROM retryq_producer, retryq_worker, retryq_admin',
        current_schema()
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
