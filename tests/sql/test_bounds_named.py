"""Issue 12's left-overs, each a kind swept over every function:

- a refusal states the bound that holds (retry_circuit_open's seconds said
  "between 0 and ..." and refused 0);
- enqueue_retry_items reads a JSON number as JSON means it: 5.0 is the
  integer 5 (as 5e0 already was), "5" is not a number (it was taken, "abc"
  was not), and a number no column can hold (1e20, 2^31, 1e400) is 22003
  naming its key and the key's rule, as enqueue_retry_item refuses 2^31;
- a blank plugin_name ("  ", U+00A0, ...) is refused on every path that
  writes a row or creates a key, as blank worker ids, event types and dedupe
  keys are; '' stays the spelling of "no plugin", and the verbs that end or
  read a key still take a blank one written before the rule.

Each test failed on the SQL before migration 0025."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.sql.test_hostile import refused

Conn = psycopg.Connection[Any]

BLANK_PLUGINS = ["  ", "\u00a0", "\t", "\u200b", "\u3000 "]


@pytest.fixture
def conn(module_dsn: str, module_reset: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
        yield c


def _items(conn: Conn, *extra: dict[str, Any]) -> list[tuple[Any, ...]]:
    """enqueue_retry_items of one good item, then one per `extra`."""
    items = [{"event_type": "t", "event_data": 1}]
    items += [{"event_type": "t", "event_data": 1, **e} for e in extra]
    return conn.execute("SELECT * FROM enqueue_retry_items(%s)", [Jsonb(items)]).fetchall()


# --- a refusal states the bound that holds -----------------------------------


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), 31536000.5])
def test_circuit_open_states_that_seconds_must_be_above_zero(conn: Conn, seconds: float) -> None:
    err = refused(
        conn,
        lambda: conn.execute("SELECT retry_circuit_open('k', NULL, %s)", [seconds]),
        "22023",
        "seconds",
    )
    message = err.diag.message_primary or ""
    assert "above 0" in message and "between 0" not in message, message


@pytest.mark.parametrize("field", ["max_retries", "priority"])
def test_enqueue_states_the_columns_rule_beyond_integer(conn: Conn, field: str) -> None:
    rule = {"max_retries": "between 0 and 1000", "priority": "between 1 and 10"}[field]
    err = refused(
        conn,
        lambda: conn.execute(
            f"SELECT enqueue_retry_item('t', '1', p_{field} => %s)",  # type: ignore[arg-type]
            [2**31],
        ),
        "22003",
        field,
    )
    assert rule in (err.diag.message_primary or ""), err.diag.message_primary


# --- enqueue_retry_items: JSON numbers as JSON means them ---------------------


@pytest.mark.parametrize(
    ("text", "stored"),
    [("5.0", 5), ("5.000", 5), ("50e-1", 5), ("5e0", 5), ("1E1", 10), ("-0.0", None)],
)
def test_an_integral_number_is_an_integer(conn: Conn, text: str, stored: int | None) -> None:
    """JSON has one kind of number: a client that writes every number as a
    float (5.0) means the integer, as 5e0 (taken before) does."""
    if stored is None:  # -0.0 for max_retries: 0
        items = f'[{{"event_type": "t", "event_data": 1, "max_retries": {text}}}]'
        conn.execute("SELECT * FROM enqueue_retry_items(%s::jsonb)", [items])
        assert conn.execute("SELECT max_retries FROM daz_retry_queue").fetchone() == (0,)
        return
    for field in ("priority", "max_retries"):
        items = f'[{{"event_type": "t", "event_data": 1, "{field}": {text}}}]'
        (item_id,) = conn.execute(
            "SELECT id FROM enqueue_retry_items(%s::jsonb)", [items]
        ).fetchone() or (None,)
        got = conn.execute(
            f"SELECT {field} FROM daz_retry_queue WHERE id = %s",  # type: ignore[arg-type]
            [item_id],
        ).fetchone()
        assert got == (stored,), (field, text, got)


@pytest.mark.parametrize(
    "item",
    [
        {"priority": "5"},
        {"priority": " 5"},
        {"max_retries": "3"},
        {"retry_delay_seconds": "5"},
        {"retry_delay_seconds": "NaN"},
        {"backoff_multiplier": "2"},
        {"max_retry_delay_seconds": "60"},
        {"retry_jitter": "0.5"},
        {"delay_seconds": "5"},
        {"delay_seconds": False},
    ],
)
def test_a_string_is_not_a_number(conn: Conn, item: dict[str, Any]) -> None:
    """A numeric string was taken ("abc" was refused, "5" stored as 5)."""
    (field,) = item
    err = refused(conn, lambda: _items(conn, item), "22023", field)
    assert "number" in (err.diag.message_primary or "")


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        ("1e20", "max_retries", "between 0 and 1000"),
        ("2147483648", "max_retries", "between 0 and 1000"),
        ("1099511627776", "max_retries", "between 0 and 1000"),
        ("2147483648", "priority", "between 1 and 10"),
        ("-2147483649", "priority", "between 1 and 10"),
        ("1e400", "priority", "between 1 and 10"),
        ("1e400", "retry_delay_seconds", "between 0 and 31536000"),
        ("-1e400", "retry_jitter", "between 0 and 1"),
        ("1e309", "backoff_multiplier", "between 1 and 10"),
        ("1e-400", "max_retry_delay_seconds", "between 0 and 31536000"),
    ],
)
def test_a_number_no_column_holds_is_out_of_range_by_name(
    conn: Conn, text: str, field: str, rule: str
) -> None:
    """22003 naming the key and its rule, as enqueue_retry_item refuses 2^31;
    before, 22023 "must be an integer between -2147483648 and 2147483647"
    (for 0..1000) or "must be a number" (for 1e400, a number)."""
    items = (
        '[{"event_type": "t", "event_data": 1}, '
        f'{{"event_type": "t", "event_data": 1, "{field}": {text}}}]'
    )
    err = refused(
        conn,
        lambda: conn.execute("SELECT * FROM enqueue_retry_items(%s::jsonb)", [items]),
        "22003",
        field,
    )
    assert rule in (err.diag.message_primary or ""), err.diag.message_primary


@pytest.mark.parametrize("text", ["3.5", "5.000001", "1e-400"])
def test_a_fraction_for_an_integer_key_names_it_whole(conn: Conn, text: str) -> None:
    items = f'[{{"event_type": "t", "event_data": 1, "priority": {text}}}]'
    err = refused(
        conn,
        lambda: conn.execute("SELECT * FROM enqueue_retry_items(%s::jsonb)", [items]),
        "22023",
        "priority",
    )
    assert "whole number" in (err.diag.message_primary or "")


def test_a_dedupe_keyed_batch_reads_numbers_alike(conn: Conn) -> None:
    """The keyed path converts the items on its own: the same rules."""
    rows = _items(conn, {"priority": 7.0, "dedupe_key": "d"})
    stored = conn.execute("SELECT priority FROM daz_retry_queue WHERE id = %s", [rows[1][0]])
    assert stored.fetchone() == (7,)
    refused(conn, lambda: _items(conn, {"priority": "7", "dedupe_key": "e"}), "22023", "priority")
    refused(conn, lambda: _items(conn, {"priority": 1e20, "dedupe_key": "e"}), "22003", "priority")


# --- a blank plugin_name ------------------------------------------------------


def _copy(conn: Conn, plugin: str) -> None:
    with (
        conn.cursor() as cur,
        cur.copy("COPY daz_retry_queue (event_type, event_data, plugin_name) FROM STDIN") as copy,
    ):
        copy.write_row(("t", json.dumps(1), "ok"))
        copy.write_row(("t", json.dumps(1), plugin))


WRITERS = {
    "insert": lambda c, p: c.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data, plugin_name)"
        " VALUES ('t', '1', 'ok'), ('t', '1', %s)",
        [p],
    ),
    "copy": _copy,
    "enqueue_retry_item": lambda c, p: c.execute(
        "SELECT enqueue_retry_item('t', '1', NULL, %s)", [p]
    ),
    "enqueue_retry_item_once": lambda c, p: c.execute(
        "SELECT enqueue_retry_item_once(gen_random_uuid(), 't', '1', NULL, %s)", [p]
    ),
    "enqueue_retry_items": lambda c, p: _items(c, {"plugin_name": p}),
    "enqueue_retry_items_keyed": lambda c, p: _items(c, {"plugin_name": p, "dedupe_key": "k"}),
}


@pytest.mark.parametrize("path", sorted(WRITERS))
@pytest.mark.parametrize("plugin", BLANK_PLUGINS)
def test_a_blank_plugin_name_is_refused_on_every_enqueue_path(
    conn: Conn, path: str, plugin: str
) -> None:
    refused(conn, lambda: WRITERS[path](conn, plugin), "22023", "plugin_name")


@pytest.mark.parametrize("path", sorted(WRITERS))
def test_an_empty_plugin_name_is_still_none(conn: Conn, path: str) -> None:
    WRITERS[path](conn, "")
    assert conn.execute(
        "SELECT count(*) FROM daz_retry_queue WHERE plugin_name = ''"
    ).fetchone() == (1,)


KEY_MAKERS = [
    "SELECT retry_circuit_open('k', %s, 60)",
    "SELECT retry_circuit_configure('k', %s, 5)",
    "SELECT retry_rate_limit_set('k', %s, 5)",
    "SELECT retry_queue_pause('k', %s)",
    "SELECT retry_queue_pause(NULL, %s)",
]


@pytest.mark.parametrize("call", KEY_MAKERS)
@pytest.mark.parametrize("plugin", BLANK_PLUGINS)
def test_a_key_with_a_blank_plugin_name_is_refused(conn: Conn, call: str, plugin: str) -> None:
    """Before, "  " made a key apart from '' that no item of "no plugin"
    matched: a circuit opened or a pause taken for nothing."""
    refused(conn, lambda: conn.execute(call, [plugin]), "22023", "plugin_name")
    conn.execute(call, [""])  # '' is the key of the items without a plugin


@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM acquire_retry_items('w', 1, 30, p_plugin_names => %s)",
        "SELECT * FROM retry_queue_due(NULL, %s)",
    ],
)
@pytest.mark.parametrize("plugin", BLANK_PLUGINS)
def test_a_routing_list_with_a_blank_plugin_name_is_refused(
    conn: Conn, call: str, plugin: str
) -> None:
    refused(conn, lambda: conn.execute(call, [["", plugin]]), "22023", "plugin_names")
    conn.execute(call, [["", "sql"]])


def test_a_blank_key_written_before_the_rule_can_still_be_ended(conn: Conn) -> None:
    """The verbs that end a key take any name, so a pause, circuit or rate
    limit made before the rule (written here as the owner) is not stuck."""
    conn.execute(
        "INSERT INTO _retryq_pause (event_type, plugin_name, paused_at, paused_by)"
        " VALUES ('k', ' ', now(), current_user)"
    )
    conn.execute(
        "INSERT INTO _retryq_rate_limit (event_type, plugin_name, max_leases, period)"
        " VALUES ('k', ' ', 1, '1 second')"
    )
    conn.execute("INSERT INTO _retryq_circuit (event_type, plugin_name) VALUES ('k', ' ')")
    assert conn.execute("SELECT retry_queue_resume('k', ' ')").fetchone() == (True,)
    assert conn.execute("SELECT retry_rate_limit_clear('k', ' ')").fetchone() == (True,)
    assert conn.execute("SELECT retry_circuit_close('k', ' ')").fetchone() == (True,)
