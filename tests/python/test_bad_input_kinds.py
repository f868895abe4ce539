"""Bad input gets a clear error naming its field (issue F8), on every path
that takes it: add() on both clients, add_many's keyed path (the COPY path is
in test_add_many.py's BAD_ITEMS), the CLI's JSON numbers and integer
options, and `retryq migrate` run by a role that may not take yoyo's lock."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg.conninfo import make_conninfo

from retryq_py import AsyncRetryQueue, RetryQueue, admin
from tests.cli.test_cli import run_cli

BAD_ADDS: list[tuple[dict[str, Any], type[BaseException], str]] = [
    ({"tags": "abc"}, TypeError, "tags: expected a list of strings"),
    ({"tags": [1]}, TypeError, r"tags: tags\[0\] is not a string"),
    ({"metadata": [1]}, TypeError, "metadata: expected a mapping"),
    ({"dedupe_key": 5}, TypeError, "dedupe_key: expected a string"),
    ({"channel": 5}, TypeError, "channel: expected a string"),
    ({"plugin": 5}, TypeError, "plugin: expected a string"),
    ({"correlation_id": 5}, TypeError, "correlation_id: expected a string"),
    ({"priority": True}, TypeError, "priority"),
    ({"priority": 2**40}, pgerr.NumericValueOutOfRange, "invalid priority"),
    (
        {"metadata": {"a": math.nan}},
        pgerr.InvalidTextRepresentation,
        r"invalid metadata: metadata\['a'\] is NaN or an infinity",
    ),
    (
        {"data": {"a": [1, math.inf]}},
        pgerr.InvalidTextRepresentation,
        r"invalid data: data\['a'\]\[1\] is NaN or an infinity",
    ),
]


def count(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone()[0])


@pytest.mark.parametrize(("kwargs", "error", "named"), BAD_ADDS)
def test_add_names_the_field_and_adds_nothing(
    dsn: str, conn: Any, kwargs: dict[str, Any], error: type[BaseException], named: str
) -> None:
    args = {"data": {}, **kwargs}
    data = args.pop("data")
    with pytest.raises(error, match=named):
        RetryQueue(conn).add("e", data, **args)

    async def async_add() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            await AsyncRetryQueue(aconn).add("e", data, **args)

    with pytest.raises(error, match=named):
        asyncio.run(async_add())
    assert count(conn) == 0
    # the connection is still usable
    assert RetryQueue(conn).add("e", {}).id > 0


@pytest.mark.parametrize(("kwargs", "error", "named"), BAD_ADDS)
def test_a_keyed_add_many_names_the_item_and_the_field(
    conn: Any, kwargs: dict[str, Any], error: type[BaseException], named: str
) -> None:
    bad = {"event_type": "e", "data": {}, "dedupe_key": "k-bad", **kwargs}
    good = {"event_type": "e", "data": {}, "dedupe_key": "k-good"}
    with pytest.raises(error, match="item 1: " + named):
        RetryQueue(conn).add_many([good, bad])
    assert count(conn) == 0


def test_a_keyed_add_many_names_an_item_that_is_no_mapping(conn: Any) -> None:
    good = {"event_type": "e", "data": {}, "dedupe_key": "k"}
    with pytest.raises(TypeError, match="item 1: expected a NewItem or a mapping"):
        RetryQueue(conn).add_many([good, "x"])  # type: ignore[list-item]
    assert count(conn) == 0


def test_enqueue_keeps_a_number_beyond_a_float(dsn: str, conn: Any) -> None:
    """json.loads read 1e400 as inf, sent as the token Infinity: "invalid
    input syntax for type json". PostgreSQL keeps the number."""
    done = run_cli(
        "enqueue",
        "--event-type",
        "e",
        "--data",
        '{"a": 1e400, "b": [-1e309, 2.5]}',
        "--metadata",
        '{"m": 1E+999}',
        dsn=dsn,
    )
    assert done.returncode == 0, done.stderr
    lines = (
        '{"event_type": "e", "data": 7e400}\n'
        '{"event_type": "e", "data": [1e400], "dedupe_key": "k"}\n'
    )
    done = run_cli("enqueue", "--stdin", dsn=dsn, stdin=lines)
    assert done.returncode == 0, done.stderr
    rows = conn.execute(
        "SELECT event_data = %s::jsonb, event_metadata = %s::jsonb"
        " FROM daz_retry_queue ORDER BY id",
        ['{"a": 1e400, "b": [-1e309, 2.5]}', '{"m": 1e999}'],
    ).fetchall()
    assert rows[0] == (True, True)
    data = conn.execute(
        "SELECT event_data = '7e400'::jsonb, event_data = '[1e400]'::jsonb"
        " FROM daz_retry_queue ORDER BY id OFFSET 1"
    ).fetchall()
    assert data == [(True, False), (False, True)]


BIG = str(2**63)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("cancel", "--id", "1", "--id", BIG, "--yes"), "--id"),
        (("cancel", "--id", "-" + str(2**63 + 1), "--yes"), "--id"),
        (("dead-letter", "requeue", "--id", BIG), "--id"),
        (("dead-letter", "purge", "--id", BIG, "--yes"), "--id"),
        (("dead-letter", "show", BIG), "ID"),
        (("dead-letter", "list", "--limit", BIG), "--limit"),
        (("cleanup", "--batch-size", BIG), "--batch-size"),
        (("cleanup", "--retention-days", BIG), "--retention-days"),
    ],
)
def test_an_integer_option_beyond_bigint_is_named(
    dsn: str, args: tuple[str, ...], option: str
) -> None:
    """Was "bigint out of range" (or a missing numeric overload), exit 1 or 4."""
    done = run_cli(*args, dsn=dsn)
    assert done.returncode == 2, done.stderr
    assert re.search(rf"invalid value for '{re.escape(option)}'", done.stderr), done.stderr


def test_migrate_by_a_role_that_may_not_take_the_lock_is_refused_at_once(
    dsn: str, conn: Any
) -> None:
    """yoyo retried the lock's 'permission denied' for 60 s, silently."""
    role = f"retryq_nolock_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        assert conn.execute("SELECT to_regclass('yoyo_lock') IS NOT NULL").fetchone() == (True,)
        t = admin.target(make_conninfo(dsn, user=role))
        with pytest.raises(pgerr.InsufficientPrivilege, match=f"role {role} may not"):
            admin.migrate_apply(t)
    finally:
        conn.execute(f"DROP ROLE {role}")
