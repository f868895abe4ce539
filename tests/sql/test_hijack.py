"""Installing cannot hand the owner's rights to others (issue 12, item 6).

A role that may CREATE in the install schema could plant a better-matching
overload of a function or an operator that the SECURITY DEFINER functions use
(public.make_interval(secs integer) beats pg_catalog.make_interval(...,
secs double precision) for an integer argument), and it would run with the
owner's rights. Installing refuses such a schema; and should someone grant
CREATE afterwards, the functions call every built-in by its pg_catalog name and
use operators only on exactly typed operands, so a planted overload never runs.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from retryq_py import migrate

Conn = psycopg.Connection[Any]

# the argument types the functions handle, for the planted overloads
TYPES = [
    "smallint", "integer", "bigint", "double precision", "numeric", "text", "name",
    "oid", "boolean", "timestamptz", "interval", "jsonb", "uuid", "text[]",
    "bigint[]", "integer[]", "jsonb[]",
]
OPERATORS = [
    "=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "||", "@>", "<@", "&&",
    "~", "?", "?|", "?&", "->", "->>", "#>",
]
BOOLEAN_OPERATORS = {"=", "<>", "<", "<=", ">", ">=", "@>", "<@", "&&", "~", "?", "?|", "?&"}
# built-ins the functions call (every one of them, by name; the static test
# below finds any new one that is not qualified)
FUNCTIONS = [
    "make_interval", "btrim", "length", "octet_length", "jsonb_typeof",
    "jsonb_array_length", "jsonb_build_object", "jsonb_build_array", "jsonb_each",
    "jsonb_array_elements", "jsonb_object_keys", "jsonb_to_record", "array_length",
    "cardinality", "array_ndims", "array_position", "array_replace", "array_append",
    "array_agg", "unnest", "format", "current_setting", "set_config", "pg_notify",
    "nextval", "setval", "hashtext", "chr", "ln", "power", "abs", "pg_column_size",
    "generate_series", "num_nonnulls", "has_table_privilege", "pg_has_role",
    "sha256", "convert_to", "current_schema",
    "isfinite", "count", "min", "max",
    # no arguments: pg_catalog, searched first, wins an identical signature
    "now", "clock_timestamp", "statement_timestamp", "random", "gen_random_uuid",
]


def _plants(conn: Conn) -> list[str]:
    """CREATE statements for every planted overload that pg_catalog lacks as an
    exact signature: each raises, naming itself and the role it ran as."""
    exists = {
        (name, left, right)
        for name, left, right in conn.execute(
            "SELECT o.oprname, format_type(o.oprleft, NULL), format_type(o.oprright, NULL)"
            " FROM pg_operator AS o WHERE o.oprnamespace = 'pg_catalog'::regnamespace"
        ).fetchall()
    }
    canon = {
        t: conn.execute("SELECT format_type(%s::regtype, NULL)", (t,)).fetchone()[0]  # type: ignore[index]
        for t in TYPES
    }
    out = [
        "CREATE TABLE public.hijack_marks (what text, ran_as text, context text)",
        "GRANT INSERT, SELECT, DELETE ON public.hijack_marks TO PUBLIC",
    ]
    body = (
        "LANGUAGE plpgsql AS $p$ DECLARE c text; BEGIN"
        " GET DIAGNOSTICS c = PG_CONTEXT;"
        " INSERT INTO public.hijack_marks VALUES ({what}, current_user, c);"
        " RETURN NULL; END $p$"
    )
    for i, op in enumerate(OPERATORS):
        for j, left in enumerate(TYPES):
            for k, right in enumerate(TYPES):
                if (op, canon[left], canon[right]) in exists:
                    continue
                fn = f"hijack_op_{i}_{j}_{k}"
                result = "boolean" if op in BOOLEAN_OPERATORS else left
                what = f"'operator {left} {op} {right}'".replace("'", "''")
                out.append(
                    f"CREATE FUNCTION public.{fn}({left}, {right}) RETURNS {result} "
                    + body.format(what=f"'{what}'")
                )
                out.append(
                    f"CREATE OPERATOR public.{op} (LEFTARG = {left}, RIGHTARG = {right},"
                    f" FUNCTION = public.{fn})"
                )
    pairs = ["integer", "bigint", "double precision", "text", "boolean", "jsonb", "text[]"]
    signatures = [[]] + [[t] for t in TYPES] + [[a, b] for a in pairs for b in pairs]
    # and retryq's private helpers: a better-matching overload of one called
    # with inexact types is the same kind. (Overloads of the public functions
    # capture only a client's own unqualified call, with the client's rights:
    # README, Least privilege.)
    own = [
        name for (name,) in conn.execute(
            "SELECT DISTINCT proname FROM pg_proc"
            " WHERE pronamespace = 'public'::regnamespace AND proname LIKE '\\_retryq\\_%'"
        ).fetchall()
    ]
    assert len(own) > 10
    taken = {
        (name, args) for name, args in conn.execute(
            "SELECT proname, oidvectortypes(proargtypes) FROM pg_proc"
            " WHERE pronamespace = 'public'::regnamespace"
        ).fetchall()
    }
    for name in FUNCTIONS + own:
        for args in signatures:
            if (name, ", ".join(canon[a] for a in args)) in taken:
                continue
            if name == "make_interval" and args == ["integer"]:
                continue  # planted below, with its parameter's name
            result = args[0] if args else "integer"
            out.append(
                f"CREATE FUNCTION public.{name}({', '.join(args)}) RETURNS {result} "
                + body.format(what=f"'{name}({', '.join(args)})'")
            )
    # the example, by its parameter name
    out.append(
        "CREATE FUNCTION public.make_interval(secs integer) RETURNS interval "
        + body.format(what="'make_interval(secs integer)'")
    )
    return out


@pytest.fixture(scope="module")
def hijacked(module_dsn: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The module's database after install: CREATE on public granted to a role
    with no retryq grant, which planted its overloads; one login per group."""
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    made = {g: f"t_{g}_{tag}" for g in ("retryq_producer", "retryq_worker", "retryq_admin")}
    made["hijacker"] = f"t_hijacker_{tag}"
    with psycopg.connect(module_dsn, autocommit=True) as c:
        for group, login in made.items():
            c.execute(f'CREATE ROLE "{login}" LOGIN')  # type: ignore[arg-type]
            if group != "hijacker":
                c.execute(f'GRANT {group} TO "{login}"')  # type: ignore[arg-type]
        c.execute(f'GRANT CREATE ON SCHEMA public TO "{made["hijacker"]}"')  # type: ignore[arg-type]
        plants = _plants(c)
    try:
        with psycopg.connect(make_conninfo(module_dsn, user=made["hijacker"])) as h:
            h.autocommit = True
            # a few round trips (the simple protocol runs a batch in order, in
            # one transaction: small enough for the lock table)
            for at in range(0, len(plants), 1000):
                h.execute(";\n".join(plants[at:at + 1000]))  # type: ignore[arg-type]
        yield module_dsn, made
    finally:
        with psycopg.connect(module_dsn, autocommit=True) as c:
            planted = c.execute(
                "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
                " WHERE p.proowner = %s::regrole", (made["hijacker"],)
            ).fetchall()
            for at in range(0, len(planted), 1000):
                drops = [f"DROP FUNCTION {fn} CASCADE" for (fn,) in planted[at:at + 1000]]
                c.execute(";\n".join(drops))  # type: ignore[arg-type]
            c.execute(f'DROP OWNED BY "{made["hijacker"]}"')  # type: ignore[arg-type]
            c.execute(f'REVOKE CREATE ON SCHEMA public FROM "{made["hijacker"]}"')  # type: ignore[arg-type]
            for login in made.values():
                c.execute(f'DROP ROLE IF EXISTS "{login}"')  # type: ignore[arg-type]


# what VERBS leave: 1, 3 and 4 completed and cleaned up, 2 dead-lettered and requeued
DONE = ["(2,pending)"]

# every verb, as its role, in an order where each finds what it needs
VERBS: list[tuple[str, str]] = [
    ("retryq_producer",
     "SELECT id FROM enqueue_retry_item('hj', '{\"a\": 1}', p_delay_seconds => 0)"),
    ("retryq_producer",
     "SELECT enqueue_retry_item('hj', '{}', p_max_retries => 0, p_tags => '{x}')"),
    ("retryq_producer",
     "SELECT enqueue_retry_items('[{\"event_type\": \"hj\", \"event_data\": {}}]')"),
    ("retryq_producer",
     "INSERT INTO daz_retry_queue (event_type, event_data, tags, event_metadata, max_retries)"
     " VALUES ('hj', '{}', NULL, 'null', 5) RETURNING id, event_id"),
    ("retryq_worker", "SELECT retry_queue_channel()"),
    ("retryq_worker", "SELECT count(*) FROM acquire_retry_items('w', 2, 60)"),
    ("retryq_worker", "SELECT extend_retry_lock(1, 'w', 120)"),
    ("retryq_worker", "SELECT complete_retry_item(1, 'w')"),
    ("retryq_worker", "SELECT fail_retry_item(2, 'w', 'boom', 'E1')"),
    ("retryq_worker", "SELECT fail_retry_item(2, 'w', '429', 'E2', p_retry_after_seconds => 30)"),
    ("retryq_worker", "SELECT snooze_retry_item(2, 'w', 30)"),
    ("retryq_worker", "SELECT count(*) FROM acquire_retry_items('w', 10, 60)"),
    ("retryq_worker", "SELECT complete_retry_items(ARRAY[3, 4], 'w')"),
    ("retryq_worker", "SELECT release_retry_items(ARRAY[3, 4]::bigint[], 'w')"),
    ("retryq_admin", "SELECT * FROM retry_queue_due()"),
    ("retryq_admin", "SELECT count(*) FROM list_dead_letter_items()"),
    ("retryq_admin", "SELECT requeue_dead_letter_items(ARRAY[2])"),
    ("retryq_admin", "SELECT purge_dead_letter_items(ARRAY[2])"),
    ("retryq_admin", "SELECT cancel_retry_items(ARRAY[999])"),
    ("retryq_admin", "SELECT * FROM cleanup_retry_queue(0)"),
    ("retryq_admin", "SELECT * FROM cleanup_retry_queue_due(0)"),
    ("retryq_admin", "SELECT retry_circuit_configure('hj', NULL, 1, 5, 60)"),
    ("retryq_admin", "SELECT retry_circuit_open('hj', NULL, 60)"),
    ("retryq_admin", "SELECT retry_circuit_close('hj', NULL)"),
    ("retryq_admin", "SELECT retry_circuit_configure('hj', NULL, 2, 5, 60)"),
    ("retryq_admin", "SELECT count(*) FROM daz_retry_queue_stats"),
    ("retryq_admin", "SELECT count(*) FROM daz_retry_queue_alerts"),
    ("retryq_admin", "SELECT count(*) FROM daz_retry_queue_circuits"),
]


def test_installing_into_a_schema_where_others_may_create_is_refused(
    new_database: Any,
) -> None:
    dsn = new_database()
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    other = f"t_other_{tag}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'CREATE ROLE "{other}"')  # type: ignore[arg-type]
        c.execute("CREATE SCHEMA q")
    try:
        cases = [
            ("GRANT CREATE ON SCHEMA public TO PUBLIC", "public", "PUBLIC"),
            (f'GRANT CREATE ON SCHEMA q TO "{other}"', "q", other),
        ]
        for grant, schema, who in cases:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(grant)  # type: ignore[arg-type]
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                migrate.apply(make_conninfo(dsn, options=f"-csearch_path={schema}"))
            message = str(err.value.diag.message_primary)
            assert f"schema {schema}" in message and who in message, message
            with psycopg.connect(dsn, autocommit=True) as c:
                # nothing of retryq was installed
                assert c.execute(
                    "SELECT count(*) FROM pg_proc WHERE proname LIKE '%%retry%%'"
                    " AND pronamespace IN ('public'::regnamespace, 'q'::regnamespace)"
                ).fetchone() == (0,)
                c.execute(grant.replace("GRANT", "REVOKE").replace(" TO ", " FROM "))  # type: ignore[arg-type]
        # revoked: the same installs go through
        migrate.apply(make_conninfo(dsn, options="-csearch_path=q"))
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'DROP OWNED BY "{other}"')  # type: ignore[arg-type]
            c.execute(f'DROP ROLE "{other}"')  # type: ignore[arg-type]


def test_no_planted_overload_runs_and_every_verb_works(
    hijacked: tuple[str, dict[str, str]],
) -> None:
    dsn, logins = hijacked
    failed = []
    for role, query in VERBS:
        with psycopg.connect(make_conninfo(dsn, user=logins[role])) as c:
            try:
                c.execute(query)  # type: ignore[arg-type]
            except psycopg.Error as err:
                failed.append(f"{role}: {query}: {err.sqlstate} {err}")
    with psycopg.connect(dsn) as c:
        marks = c.execute(
            "SELECT what, ran_as, context FROM public.hijack_marks"
        ).fetchall()
        # where each planted overload ran: the innermost retryq function line
        where = sorted({
            f"{what} in {_caller(context)} as {ran_as}" for what, ran_as, context in marks
        })
        assert (failed, where) == ([], [])
        # and they did what they do
        assert c.execute(
            "SELECT pg_catalog.array_agg(ROW(id, status)::text ORDER BY id)"
            " FROM public.daz_retry_queue"
        ).fetchone() == (DONE,)


def test_the_planted_overloads_would_be_chosen(hijacked: tuple[str, dict[str, str]]) -> None:
    """The plants are live: an unqualified call with an inexact type picks them."""
    dsn, logins = hijacked
    with psycopg.connect(make_conninfo(dsn, user=logins["retryq_worker"])) as c:
        for query in [
            "SELECT make_interval(secs => 5)",
            "SELECT cardinality(ARRAY[1::bigint])",
            "SELECT 1.5::double precision = 0",
            "SELECT ARRAY['a'] || 'b'::text",
        ]:
            c.execute(query)  # type: ignore[arg-type]
            marks = c.execute(
                "DELETE FROM public.hijack_marks RETURNING what"
            ).fetchall()
            assert len(marks) == 1, (query, marks)
            c.commit()


def _caller(context: str) -> str:
    """The first function in a PL/pgSQL context that is not a plant."""
    for line in context.splitlines():
        m = re.search(r"function (\w+)\(.*?\) line (\d+)", line)
        if m and not m.group(1).startswith("hijack_op_") and m.group(1) not in FUNCTIONS:
            return f"{m.group(1)}:{m.group(2)}"
        m = re.search(r"SQL function \"(\w+)\"", line)
        if m:
            return m.group(1)
    return context


# SQL syntax that the grammar turns into a pg_catalog call by itself
SYNTAX = {"extract", "overlay", "position", "substring", "trim", "normalize", "collation"}
_STRIP = re.compile(r"--[^\n]*|'(?:[^']|'')*'|\"(?:[^\"])*\"")


def test_every_built_in_call_is_qualified(module_dsn: str) -> None:
    """No function body of the install calls a pg_catalog function (with
    arguments) by its bare name: a bare name is open to a better-matching
    overload in the install schema. Views, defaults and CHECKs are parsed once,
    at install, so only the bodies are looked at. (The module's plants are in
    public: this looks from pg_catalog alone, or `proname ~ 'retry'` would run
    the planted ~(name, name).)"""
    with psycopg.connect(make_conninfo(module_dsn, options="-csearch_path=pg_catalog")) as c:
        builtins = {
            name for (name,) in c.execute(
                "SELECT DISTINCT proname FROM pg_proc"
                " WHERE pronamespace = 'pg_catalog'::regnamespace"
            ).fetchall()
        }
        ours = {
            name for (name,) in c.execute(
                # retryq's own (the module's plants, if any, are not)
                "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
                " AND proname ~ 'retry'"
            ).fetchall()
        }
        bodies = c.execute(
            "SELECT proname, prosrc FROM pg_proc"
            " WHERE pronamespace = 'public'::regnamespace AND proname ~ 'retry'"
        ).fetchall()
    found = []
    for fn, src in bodies:
        code = _STRIP.sub("''", src)
        for m in re.finditer(r"(?<![\w.])([a-z_][a-z0-9_]*)\s*\(\s*(\)?)", code, re.I):
            name = m.group(1).lower()
            if name in builtins - SYNTAX and name not in ours and not m.group(2):
                found.append(f"{fn}: {name}(")
    assert found == []
