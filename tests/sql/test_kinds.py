"""Property tests for the kinds of issue 12 (item 9): every public function,
and the guide's INSERT, as the role that may call it, with drawn NULLs,
extremes, special timestamps and hostile strings. Each call either works or is
refused with a class the clients branch on (22 data exception, 23 integrity,
54 program limit, 42501 insufficient privilege), and a refused call writes
nothing. The functions and their parameters are read from the catalog, so a new
function or parameter is drawn for without editing this file.

Integers are drawn across the whole bigint range, for every integer parameter
and integer column: a public function takes bigint for each (2**31 used to give
42883, "function does not exist"), and an integer column refuses what does not
fit it with 22003. Arrays are drawn with a NULL element and with a second
dimension, which every array parameter refuses.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

Conn = psycopg.Connection[Any]
GROUPS = ("retryq_producer", "retryq_worker", "retryq_admin")
ALLOWED_CLASSES = {"22", "23", "54"}

HOSTILE = st.sampled_from([
    "", " ", "\t", " \t\n\r\f\v", "\u00a0", "\u2028", "\ufeff", "\U0001f600", "e\u0301",
    "\u3000", "\u2003", "\u200b", "\u0085", " \u00a0\u2060", "\u3000x",
    "\u3164", "\u2800", "\ufe0f", "\U000e0020", "\u115f\u034f", "\uffa0",
    "'", "''; DROP TABLE daz_retry_queue; --", '"', "\\", "\\u0000", "%s", "%I", "$$",
    "daz_retry_queue", "_retryq_active", "x" * 201, "y" * 5000, "w",
])
TEXT = (
    st.none() | HOSTILE
    | st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
              max_size=300)
)
INT8 = st.none() | st.sampled_from([
    0, 1, 2, 3, 4, 5, -1, 10, 1000, 1001, 86400, 86401, 2**31 - 1, -(2**31), 2**31,
    -(2**31) - 1, 2**63 - 1, -(2**63),
]) | st.integers(-(2**63), 2**63 - 1)
FLOAT = st.none() | st.sampled_from([
    0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, 1e308, 31536000.0, 31536000.5,
    float("inf"), float("-inf"), float("nan"),
]) | st.floats()
TIMESTAMP = st.none() | st.sampled_from([
    "infinity", "-infinity", "epoch", "4713-01-01 00:00:00+00 BC", "294276-12-31 00:00:00+00",
    "2000-01-01 00:00:00+00", "2100-01-01 00:00:00+00",
])
# enqueue_retry_items must refuse these: an object, array or boolean for a
# text key or among the tags
WRONGLY_TYPED_ITEMS = {
    '[{"event_type": ["k"], "event_data": {}}]',
    '[{"event_type": "k", "event_data": {}, "channel_name": {"c": 1}}]',
    '[{"event_type": "k", "event_data": {}, "dedupe_key": true}]',
    '[{"event_type": "k", "event_data": {}, "tags": ["t", ["u"]]}]',
}
JSON_SCALAR = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | HOSTILE
)
JSON = st.one_of(
    st.just("null"), st.just('"\\u0000"'), st.just('{"a": "\\u0000"}'), st.just("[]"),
    st.just("[[[[[[[[[[1]]]]]]]]]]"), st.just('{"event_type": 1}'),
    st.just('[{"event_type": "k", "event_data": {}, "priority": 99999999999}]'),
    st.just('[{"event_type": "k", "event_data": {}, "delay_seconds": "NaN"}]'),
    st.sampled_from(sorted(WRONGLY_TYPED_ITEMS)),
    st.recursive(
        JSON_SCALAR,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE, inner, max_size=4),
        max_leaves=12,
    ).map(json.dumps),
) | st.none()
TEXT_ARRAY = st.none() | st.sampled_from([
    [], [None], [""], ["\t"], [["a"], ["b"]], ["x" * 5000], ["t"] * 5000,
]) | st.lists(TEXT.filter(lambda s: s is not None), max_size=5)
INT8_ARRAY = st.none() | st.sampled_from([
    [], [None], [[1], [2]], [-1], [2**63 - 1], list(range(1, 20001)),
]) | st.lists(INT8.filter(lambda i: i is not None), max_size=5)
TIMESTAMP_ARRAY = st.none() | st.sampled_from([
    [], [None], [["2000-01-01 00:00:00+00"], ["2000-01-01 00:00:00+00"]],
]) | st.lists(TIMESTAMP.filter(lambda t: t is not None), max_size=5)
BOOL = st.none() | st.booleans()
# what a client sends for an integer: psycopg picks int8 for 2**31 and more
SENT_AS = {"integer": "bigint", "smallint": "bigint"}

BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    # an integer is sent as a bigint: the value, not the cast, is what is tested
    "text": TEXT, "integer": INT8, "bigint": INT8, "double precision": FLOAT,
    "timestamp with time zone": TIMESTAMP, "jsonb": JSON, "text[]": TEXT_ARRAY,
    "bigint[]": INT8_ARRAY, "timestamp with time zone[]": TIMESTAMP_ARRAY, "boolean": BOOL,
    "uuid": st.none() | st.just(uuid.UUID(int=0)) | st.uuids(),
}

STATE = (
    "SELECT md5(concat("
    " (SELECT string_agg(q::text, ',' ORDER BY q.id) FROM daz_retry_queue AS q),"
    " (SELECT string_agg(a::text, ',' ORDER BY a.id, a.archived_at)"
    "  FROM daz_retry_queue_archive AS a),"
    " (SELECT string_agg(c::text, ',' ORDER BY c.event_type, c.plugin_name)"
    "  FROM _retryq_circuit AS c)))"
)
# (not the id sequence: a refused INSERT may have drawn a number from it, which
# is no write: sequences are not transactional, and ids may have gaps)


def _functions(dsn: str) -> list[tuple[str, str, list[tuple[str, str, bool]]]]:
    """(name, role, [(parameter, type, has default)]) of every function a
    group role may call."""
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT p.proname, p.proargnames[1:p.pronargs],"
            " ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t),"
            " p.pronargdefaults,"
            " (SELECT g FROM unnest(%s::text[]) AS g"
            "  WHERE has_function_privilege(g, p.oid, 'EXECUTE') LIMIT 1)"
            " FROM pg_proc AS p WHERE p.pronamespace = 'public'::regnamespace"
            " AND p.proname NOT LIKE '\\_%%' ORDER BY p.proname",
            (list(GROUPS),),
        ).fetchall()
    out = []
    for name, names, types, ndefaults, role in rows:
        if role is None:
            continue
        n = len(types)
        params = [(names[i], types[i], i >= n - ndefaults) for i in range(n)]
        out.append((name, role, params))
    return out


@pytest.fixture(scope="module")
def kinds_db(module_dsn: str) -> Iterator[tuple[str, dict[str, str]]]:
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    made = {g: f"t_{g}_{tag}" for g in GROUPS}
    with psycopg.connect(module_dsn, autocommit=True) as c:
        for group, login in made.items():
            c.execute(f'CREATE ROLE "{login}" LOGIN')  # type: ignore[arg-type]
            c.execute(f'GRANT {group} TO "{login}"')  # type: ignore[arg-type]
        # a few items in every state for the ids 1..5 the draws favour
        for i in range(5):
            c.execute("SELECT enqueue_retry_item('k', %s::jsonb, p_max_retries => 0)",
                      (json.dumps({"i": i}),))
        c.execute("SELECT count(*) FROM acquire_retry_items('w', 3, 600)")
        c.execute("SELECT complete_retry_item(1, 'w')")
        c.execute("SELECT fail_retry_item(2, 'w', 'x')")
    try:
        yield module_dsn, made
    finally:
        with psycopg.connect(module_dsn, autocommit=True) as c:
            for login in made.values():
                c.execute(f'DROP OWNED BY "{login}"')  # type: ignore[arg-type]
                c.execute(f'DROP ROLE IF EXISTS "{login}"')  # type: ignore[arg-type]


def _refusal_or_success(
    dsn: str, login: str, query: str, args: list[Any]
) -> tuple[str | None, bool]:
    """Runs query as login in autocommit; (SQLSTATE or None, state unchanged)."""
    with psycopg.connect(dsn, autocommit=True) as owner:
        before = owner.execute(STATE).fetchone()  # type: ignore[arg-type]
        with psycopg.connect(make_conninfo(dsn, user=login), autocommit=True) as c:
            try:
                c.execute(query, args)  # type: ignore[arg-type]
                code = None
            except psycopg.Error as err:
                if err.sqlstate is None:  # the client's own error, not a refusal
                    raise
                code = err.sqlstate
        after = owner.execute(STATE).fetchone()  # type: ignore[arg-type]
    return code, before == after


def _allowed(code: str | None) -> bool:
    return code is None or code[:2] in ALLOWED_CLASSES or code == "42501"


def _functions_of_template() -> list[str]:
    # the names only, for parametrize: read from the SQL source's files
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sql" / "functions"
    return sorted(p.stem for p in root.glob("*.sql"))


@pytest.mark.parametrize("fn", _functions_of_template())
@given(data=st.data())
def test_every_function_refuses_with_a_class_and_writes_nothing(
    kinds_db: tuple[str, dict[str, str]], fn: str, data: st.DataObject
) -> None:
    dsn, logins = kinds_db
    known = {name: (role, params) for name, role, params in _functions_cached(dsn)}
    assert fn in known, fn
    role, params = known[fn]
    parts, args = [], []
    for name, typ, has_default in params:
        if has_default and data.draw(st.booleans(), label=f"omit {name}"):
            continue
        value = data.draw(BY_TYPE[typ], label=name)
        parts.append(f"{name} => %s::{SENT_AS.get(typ, typ)}")
        args.append(value)
    query = f"SELECT * FROM {fn}({', '.join(parts)})"
    replayed = False
    if fn == "enqueue_retry_item_once" and args and args[0] is not None:
        with psycopg.connect(dsn) as owner:
            replayed = owner.execute(
                "SELECT EXISTS (SELECT FROM daz_retry_queue WHERE event_id = %s)", (args[0],)
            ).fetchone() == (True,)
    code, unchanged = _refusal_or_success(dsn, logins[role], query, args)
    assert _allowed(code), (query, args, code)
    if code is not None:
        assert unchanged, (query, args, code)
    given_ = dict(zip([p.split(" =>")[0] for p in parts], args, strict=True))
    if fn == "enqueue_retry_item_once" and replayed:
        # an event id already in the queue returns its item, reading nothing
        # else: nothing written, whatever was drawn
        assert unchanged, (query, args, code)
    elif _must_refuse(fn, given_):
        assert code is not None, ("accepted", query, args)


# whitespace and invisible characters: sql/private/_retryq_blank.sql's list
# (PostgreSQL's [[:space:]] may hold more, which is refused too)
BLANK_CHARS = frozenset(
    " \t\n\r\f\v\u0085\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u2800"
    "\u3000\u3164\ufeff\uffa0"
    + "".join(map(chr, [
        *range(0x180B, 0x1810), *range(0x2000, 0x2010), *range(0x2028, 0x2030),
        *range(0x205F, 0x2070), *range(0xFE00, 0xFE10), *range(0xFFF0, 0xFFF9),
        *range(0x1BCA0, 0x1BCA4), *range(0x1D173, 0x1D17B), *range(0xE0000, 0xE1000),
    ]))
)


def _blank(value: Any) -> bool:
    return value is None or all(c in BLANK_CHARS for c in value)


def _must_refuse(fn: str, given: dict[str, Any]) -> bool:
    """Draws that every function must refuse, whatever else was drawn: a
    group role's p_now other than NULL (it never equals the server's now; NULL
    means the server's clock), a blank or
    over-long worker id, any array (ids, tags, routing lists) with a NULL
    element or a second dimension, an enqueue's priority or max_retries
    beyond integer, items with a wrongly typed text key, an enqueue's blank
    event type or dedupe key, a blank event type in a routing list, a blank
    plugin name other than '' where a row or a key is made or a list routes."""
    worker = given.get("p_worker_id", "w")
    arrays = [v for v in given.values() if isinstance(v, list)]
    beyond = [given.get(p) for p in ("p_priority", "p_max_retries")]
    return (
        given.get("p_now") is not None
        or _blank(worker) or len(worker or "") > 200
        or any(e is None or isinstance(e, list) for a in arrays for e in a)
        or (fn.startswith("enqueue_retry_item")
            and any(v is not None and not -(2**31) <= v < 2**31 for v in beyond))
        or (fn == "enqueue_retry_items" and given.get("p_items") in WRONGLY_TYPED_ITEMS)
        or (fn.startswith("enqueue_retry_item") and "p_event_type" in given
            and _blank(given["p_event_type"]))
        or (fn.startswith("enqueue_retry_item") and given.get("p_dedupe_key") is not None
            and _blank(given["p_dedupe_key"]))
        or any(isinstance(e, str) and _blank(e) for e in given.get("p_event_types") or [])
        or (fn in PLUGIN_KEY_MAKERS and isinstance(given.get("p_plugin_name"), str)
            and given["p_plugin_name"] != "" and _blank(given["p_plugin_name"]))
        or any(isinstance(e, str) and e != "" and _blank(e)
               for e in given.get("p_plugin_names") or [])
    )


# the functions that write a row or make a key with their p_plugin_name (the
# verbs that end a key take any name: tests/sql/test_bounds_named.py)
PLUGIN_KEY_MAKERS = frozenset({
    "enqueue_retry_item", "enqueue_retry_item_once", "retry_circuit_open",
    "retry_circuit_configure", "retry_rate_limit_set", "retry_queue_pause",
})


_CACHE: dict[str, list[tuple[str, str, list[tuple[str, str, bool]]]]] = {}


def _functions_cached(dsn: str) -> list[tuple[str, str, list[tuple[str, str, bool]]]]:
    if dsn not in _CACHE:
        _CACHE[dsn] = _functions(dsn)
    return _CACHE[dsn]


# the guide's INSERT: the columns a producer may set, and some it may not
INSERT_COLUMNS: dict[str, str] = {
    "id": "bigint", "event_type": "text", "channel_name": "text", "plugin_name": "text",
    "event_data": "jsonb", "event_metadata": "jsonb", "max_retries": "integer",
    "retry_delay_seconds": "double precision", "backoff_multiplier": "double precision",
    "max_retry_delay_seconds": "double precision", "retry_jitter": "double precision",
    "priority": "integer", "correlation_id": "text", "tags": "text[]",
    "created_at": "timestamp with time zone", "next_retry_at": "timestamp with time zone",
    # not the producer's: always 42501
    "status": "text", "locked_until": "timestamp with time zone", "retry_count": "integer",
}


@pytest.mark.parametrize("login_group", GROUPS)
@given(data=st.data())
def test_the_guide_insert_refuses_with_a_class_and_writes_nothing(
    kinds_db: tuple[str, dict[str, str]], login_group: str, data: st.DataObject
) -> None:
    dsn, logins = kinds_db
    chosen = data.draw(
        st.lists(st.sampled_from(sorted(INSERT_COLUMNS)), unique=True, max_size=8),
        label="columns",
    )
    columns = ["event_type", "event_data", *[c for c in chosen if c not in (
        "event_type", "event_data")]]
    args = [
        data.draw(BY_TYPE[INSERT_COLUMNS[c]] if c not in ("event_type", "event_data")
                  else (TEXT if c == "event_type" else JSON), label=c)
        for c in columns
    ]
    values = ", ".join(f"%s::{SENT_AS.get(INSERT_COLUMNS[c], INSERT_COLUMNS[c])}" for c in columns)
    query = (
        f"INSERT INTO daz_retry_queue ({', '.join(columns)}) VALUES ({values})"
        " RETURNING id, event_id"
    )
    code, unchanged = _refusal_or_success(dsn, logins[login_group], query, args)
    assert _allowed(code), (query, args, code)
    if code is not None:
        assert unchanged, (query, args, code)
    # a value that is not even of its column's type (NUL in jsonb, an integer
    # beyond integer) is refused while the statement is planned, before
    # privileges are looked at
    if login_group != "retryq_producer" or (
        {"status", "locked_until", "retry_count"} & set(columns)
    ):
        assert code in ("42501", "22003") or code[:4] == "22P0", (query, args, code)
    if code is None:
        with psycopg.connect(dsn) as owner:
            assert owner.execute(
                "SELECT status, locked_until, retry_count FROM daz_retry_queue"
                " ORDER BY id DESC LIMIT 1"
            ).fetchone() == ("pending", None, 0)
