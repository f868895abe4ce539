-- Installing refuses a schema where a role other than the installing owner
-- (or a role that can become it, or a superuser) may CREATE, directly, as a
-- member of a role that may, or through PUBLIC (the default for public before
-- PostgreSQL 15, kept by clusters upgraded from there). Such a role could put
-- a better-matching overload of a function or an operator next to retryq's
-- (public.make_interval(secs integer) beats pg_catalog's double precision one
-- for an integer argument), and the SECURITY DEFINER functions, whose pinned
-- search_path holds this schema, would run it with the owner's rights. The
-- functions also call every built-in by its pg_catalog name (README, Least
-- privilege); this check is what keeps the kind out at install. Every call
-- here is qualified too: this runs before anything is known to be safe.
DO $$
DECLARE
    v_schema text := pg_catalog.current_schema();
    v_others text;
BEGIN
    SELECT pg_catalog.string_agg(g.who, ', ' ORDER BY g.who) INTO v_others
    FROM (
        SELECT 'PUBLIC' AS who
        FROM pg_catalog.pg_namespace AS n,
            LATERAL pg_catalog.aclexplode(n.nspacl) AS a
        WHERE n.nspname = v_schema
            AND a.grantee = 0
            AND a.privilege_type = 'CREATE'
        UNION
        SELECT pg_catalog.quote_ident(r.rolname::text)
        FROM pg_catalog.pg_roles AS r
        WHERE NOT r.rolsuper
            -- its real holder, the database's owner, is one of the roles
            AND r.rolname <> 'pg_database_owner'
            AND NOT pg_catalog.pg_has_role(r.oid, CURRENT_USER, 'MEMBER')
            AND pg_catalog.has_schema_privilege(r.oid, v_schema, 'CREATE')
    ) AS g;
    IF v_others IS NOT NULL THEN
        RAISE EXCEPTION
            'retryq: refusing to install into schema %: roles other than the installing owner % may CREATE in it: %',
            pg_catalog.quote_ident(v_schema), pg_catalog.quote_ident(CURRENT_USER::text),
            v_others
            USING ERRCODE = 'insufficient_privilege',
            SCHEMA = v_schema,
            HINT = pg_catalog.format(
                'REVOKE CREATE ON SCHEMA %I FROM %s; or install into a schema '
                'only its owner can create in.',
                v_schema, v_others
            );
    END IF;
END;
$$;

-- retryq:undo
-- the check creates nothing, so nothing to undo
