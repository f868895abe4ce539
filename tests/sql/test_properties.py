"""Properties over inputs: payloads round-trip exactly, batch sizes do what
they say, backoff follows the formula for any valid settings, and a batch with
one bad element is refused whole. (tests/sql/test_validation.py covers the single
refusals field by field; these complement it.) Each example runs in a
transaction that is rolled back, so examples share one database."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from psycopg.types.json import Jsonb, set_json_loads

from retryq_py._sql import is_blank

Conn = psycopg.Connection[Any]
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

# Any text PostgreSQL can store: everything but NUL (and lone surrogates,
# which UTF-8 cannot carry).
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
EDGE_TEXT = st.sampled_from(
    ["", " ", "\u2028", "\ufeff", "\U0001f600", "e\u0301", "\\u0000", '"', "\\", "\x7f", "\x01"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | EDGE_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(TEXT | EDGE_TEXT, inner, max_size=6)
    ),
    max_leaves=40,
)


@pytest.fixture
def dconn(conn: Conn) -> Conn:
    # numbers come back as Decimal: jsonb stores numeric, so 1e308 returns as
    # the integer 10**308, equal in value but not as a Python float
    set_json_loads(partial(json.loads, parse_float=Decimal, parse_int=Decimal), conn)
    return conn


def exact(value: Any) -> Any:
    return json.loads(json.dumps(value), parse_float=Decimal, parse_int=Decimal)


def round_trip(conn: Conn, data: Any) -> Any:
    conn.execute("SELECT enqueue_retry_item('t', %s, p_now => %s)", [Jsonb(data), T0])
    rows = conn.execute(
        "SELECT event_data FROM acquire_retry_items('w', 1, 60, %s)", [T0]
    ).fetchall()
    return rows[0][0]


# Shapes the generic strategy rarely reaches; drawn by size so that a failure
# prints a number, not a megabyte.
@given(depth=st.integers(1, 5000))
def test_deep_payloads_round_trip(conn: Conn, depth: int) -> None:
    # Built and compared as text in jsonb's own output form: Python's json
    # module gives up near depth 1000, PostgreSQL does not.
    text = "1"
    for i in range(depth):
        text = f"[{text}]" if i % 2 else f'{{"k": {text}}}'
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT enqueue_retry_item('t', %s::jsonb, p_now => %s)", [text, T0])
        got = conn.execute(
            "SELECT event_data::text FROM acquire_retry_items('w', 1, 60, %s)", [T0]
        ).fetchall()
        assert got == [(text,)]


@given(
    length=st.integers(0, 2_000_000),
    width=st.integers(0, 50_000),
    char=EDGE_TEXT.filter(bool) | TEXT.filter(bool),
)
def test_large_payloads_round_trip(dconn: Conn, length: int, width: int, char: str) -> None:
    data = {"s": (char * length)[:length], "a": list(range(width)), "big": 10**40, "f": 1e308}
    with dconn.transaction(force_rollback=True):
        assert round_trip(dconn, data) == exact(data)


ACQUIRED = (
    "SELECT event_data, event_metadata, tags, correlation_id, channel_name, plugin_name,"
    " event_type FROM acquire_retry_items('w', 1000, 60, %s)"
)


@given(
    data=JSON.filter(lambda v: v is not None),
    meta=st.dictionaries(TEXT, JSON, max_size=4),
    tags=st.lists(TEXT, max_size=4),
    text=TEXT,
    # '' is no plugin; a blank name other than '' is refused (0025)
    plugin=TEXT.filter(lambda s: s == "" or not is_blank(s)),
    event_type=TEXT.filter(lambda s: 1 <= len(s.strip()) <= 200 and s.strip() == s),
    batch=st.booleans(),
)
def test_payloads_round_trip_exactly(
    dconn: Conn,
    data: Any,
    meta: Any,
    tags: list[str],
    text: str,
    plugin: str,
    event_type: str,
    batch: bool,
) -> None:
    with dconn.transaction(force_rollback=True):
        fields = {
            "event_type": event_type,
            "event_data": Jsonb(data),
            "event_metadata": Jsonb(meta),
            "tags": tags,
            "correlation_id": text,
            "channel_name": text,
            "plugin_name": plugin,
        }
        if batch:
            item = {**fields, "event_data": data, "event_metadata": meta}
            dconn.execute("SELECT enqueue_retry_items(%s, %s)", [Jsonb([item]), T0])
        else:
            names = ", ".join(f"p_{k} => %({k})s" for k in fields)
            dconn.execute(
                f"SELECT enqueue_retry_item({names}, p_now => %(now)s)", {**fields, "now": T0}
            )  # type: ignore[arg-type]
        rows = dconn.execute(ACQUIRED, [T0]).fetchall()
        assert rows == [(exact(data), exact(meta), tags, text, text, plugin, event_type)]


@given(
    items=st.lists(
        st.tuples(JSON.filter(lambda v: v is not None), st.integers(1, 10)), max_size=30
    ),
    batch=st.integers(1, 1000),
)
def test_batch_enqueue_keeps_order_and_acquire_takes_min_of_batch_and_due(
    dconn: Conn, items: list[tuple[Any, int]], batch: int
) -> None:
    with dconn.transaction(force_rollback=True):
        payload = [{"event_type": "t", "event_data": d, "priority": p} for d, p in items]
        ids = [
            r[0]
            for r in dconn.execute(
                "SELECT id FROM enqueue_retry_items(%s, %s)", [Jsonb(payload), T0]
            ).fetchall()
        ]
        assert len(ids) == len(items)
        stored = dict(
            dconn.execute(
                "SELECT id, event_data FROM daz_retry_queue WHERE id = ANY(%s)", [ids]
            ).fetchall()
        )
        assert [stored[i] for i in ids] == [exact(d) for d, _ in items]
        got = dconn.execute(
            "SELECT id, priority FROM acquire_retry_items('w', %s, 60, %s)", [batch, T0]
        ).fetchall()
        want = sorted(zip(ids, (p for _, p in items), strict=True), key=lambda r: (-r[1], r[0]))
        assert got == want[:batch]


@given(
    n=st.integers(0, 12),
    old=st.integers(0, 12),
    batch=st.integers(1, 5),
    max_rows=st.none() | st.integers(1, 15),
)
def test_cleanup_removes_exactly_the_old_rows_up_to_max_rows(
    conn: Conn, n: int, old: int, batch: int, max_rows: int | None
) -> None:
    old = min(old, n)
    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM daz_retry_queue")
        ids = [
            conn.execute(
                "SELECT id FROM enqueue_retry_item('t', '1', p_now => %s)", [T0]
            ).fetchone()[0]  # type: ignore[index]
            for _ in range(n)
        ]
        conn.execute("SELECT count(*) FROM acquire_retry_items('w', 1000, 60, %s)", [T0])
        for k, item in enumerate(ids):
            # the first `old` items finish on day 0 (k seconds apart), the rest on day 10
            when = T0 + dt.timedelta(seconds=k) if k < old else T0 + dt.timedelta(days=10)
            assert conn.execute("SELECT complete_retry_item(%s, 'w', %s)", [item, when]).fetchone()
        got = conn.execute(
            "SELECT deleted_count FROM cleanup_retry_queue(p_retention_days => 5,"
            " p_batch_size => %s, p_max_rows => %s, p_now => %s)",
            [batch, max_rows, T0 + dt.timedelta(days=10)],
        ).fetchone()
        expect = old if max_rows is None else min(old, max_rows)
        assert got == (expect,)
        left = {r[0] for r in conn.execute("SELECT id FROM daz_retry_queue")}
        assert left == set(ids) - set(ids[:expect]), "cleanup must take the oldest first"


@given(
    delay=st.floats(0, 31536000),
    multiplier=st.floats(1, 10),
    cap=st.floats(0, 31536000),
    retries=st.integers(1, 6),
)
@example(delay=1e-6, multiplier=10.0, cap=31536000.0, retries=6)
@example(delay=31536000.0, multiplier=10.0, cap=1.0, retries=2)
def test_backoff_follows_the_formula_for_any_valid_settings(
    conn: Conn, delay: float, multiplier: float, cap: float, retries: int
) -> None:
    with conn.transaction(force_rollback=True):
        (item,) = conn.execute(
            "SELECT id FROM enqueue_retry_item('t', '1', p_max_retries => %s,"
            " p_retry_delay_seconds => %s, p_backoff_multiplier => %s,"
            " p_max_retry_delay_seconds => %s, p_now => %s)",
            [retries, delay, multiplier, cap, T0],
        ).fetchone()  # type: ignore[misc]
        now = T0
        for k in range(1, retries + 1):
            got = conn.execute(
                "SELECT id FROM acquire_retry_items('w', 1, 60, %s)", [now]
            ).fetchall()
            assert got == [(item,)], f"retry {k} not due at {now}"
            conn.execute("SELECT fail_retry_item(%s, 'w', 'e', NULL, true, %s)", [item, now])
            due = conn.execute(
                "SELECT next_retry_at FROM daz_retry_queue WHERE id = %s", [item]
            ).fetchone()[0]  # type: ignore[index]
            want = 0.0 if delay == 0 or cap == 0 else min(delay * multiplier ** (k - 1), cap)
            secs = (due - now).total_seconds()
            assert math.isclose(secs, want, rel_tol=1e-9, abs_tol=2e-6), (k, secs, want)
            now = due
        conn.execute("SELECT id FROM acquire_retry_items('w', 1, 60, %s)", [now])
        conn.execute("SELECT fail_retry_item(%s, 'w', 'e', NULL, true, %s)", [item, now])
        status = conn.execute("SELECT status FROM daz_retry_queue WHERE id = %s", [item]).fetchone()
        assert status == ("dead_letter",), "the failure after the last retry must bury it"


BAD_FIELDS = {
    "priority": st.sampled_from([0, 11, -1, 2**31 - 1]),
    "max_retries": st.sampled_from([-1, 1001]),
    "retry_delay_seconds": st.sampled_from([-0.5, 31536001.0]),
    "backoff_multiplier": st.sampled_from([0.99, 10.01, 0.0]),
    "max_retry_delay_seconds": st.sampled_from([-1.0, 4e7]),
    "retry_jitter": st.sampled_from([-0.1, 1.5]),
}


@given(data=st.data(), n=st.integers(1, 20), field=st.sampled_from(sorted(BAD_FIELDS)))
def test_a_batch_with_one_bad_item_is_refused_whole(
    conn: Conn, data: st.DataObject, n: int, field: str
) -> None:
    before = conn.execute("SELECT count(*), max(id) FROM daz_retry_queue").fetchone()
    bad_at = data.draw(st.integers(0, n - 1), label="bad_at")
    value = data.draw(BAD_FIELDS[field], label="value")
    items: list[dict[str, Any]] = [{"event_type": "t", "event_data": i} for i in range(n)]
    items[bad_at][field] = value
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute("SELECT enqueue_retry_items(%s)", [Jsonb(items)])
    assert err.value.sqlstate == "23514"
    assert field in str(err.value)
    assert conn.execute("SELECT count(*), max(id) FROM daz_retry_queue").fetchone() == before


def test_nul_in_a_payload_is_refused_and_changes_nothing(conn: Conn) -> None:
    for text in ('{"a": "x\\u0000y"}',):
        with pytest.raises(psycopg.errors.UntranslatableCharacter):
            conn.execute("SELECT enqueue_retry_item('t', %s::jsonb)", [text])
    assert conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (0,)
