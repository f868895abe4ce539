"""add_many: ids by one query, rows by binary COPY with every value computed
in Python. The rows must be what enqueue_retry_items stores for the same
items, and a bad item must add nothing however the caller holds the
connection.

Written once, async, in tests/python/_async/; scripts/gen-sync makes the sync
twin in tests/python/, so every test runs for both clients. The client gets
its own connection; `db` (sync in both) looks at the tables and runs
enqueue_retry_items for reference.
"""

from __future__ import annotations

import math
import string
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerr
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from retryq_py import AsyncRetryQueue, Enqueued, RetryConfig, RetryQueue, _sql
from tests.helpers import count

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(module_dsn: str, module_reset: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(module_reset)  # type: ignore[arg-type]
        yield conn


@pytest.fixture
async def qconn(
    module_dsn: str, db: psycopg.Connection[Any]
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The client's connection (autocommit), opened after `db` emptied the queue."""
    async with await psycopg.AsyncConnection.connect(module_dsn, autocommit=True) as conn:
        yield conn


async def count_on(conn: psycopg.AsyncConnection[Any]) -> int:
    """tests.helpers.count on the client's own connection (its transaction)."""
    cur = await conn.execute("SELECT count(*) FROM daz_retry_queue")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# add()'s keywords -> enqueue_retry_items' keys
SQL_KEYS = {
    "data": "event_data",
    "channel": "channel_name",
    "plugin": "plugin_name",
    "metadata": "event_metadata",
    "retry_delay": "retry_delay_seconds",
    "delay": "delay_seconds",
    "max_retry_delay": "max_retry_delay_seconds",
}


def sql_element(item: Mapping[str, Any]) -> dict[str, Any]:
    """The enqueue_retry_items element for an add_many item (None: absent)."""
    out = {}
    for key, value in item.items():
        if value is None and key not in ("event_type", "data"):
            continue
        if isinstance(value, timedelta):
            value = value.total_seconds()
        elif key == "tags":
            value = list(value)
        out[SQL_KEYS.get(key, key)] = value
    return out


def stored(db: psycopg.Connection[Any], ids: list[int], *, clock: bool = True) -> list[Any]:
    """Every column but id and event_id, in the order of ids (without clock:
    the delay, next_retry_at - created_at, instead of the two times)."""
    times = (
        ""
        if clock
        else (
            " - 'created_at' - 'next_retry_at'"
            " || jsonb_build_object('delay', q.next_retry_at - q.created_at)"
        )
    )
    rows = dict(
        db.execute(
            "SELECT q.id, to_jsonb(q) - 'id' - 'event_id'"  # type: ignore[arg-type]
            + times
            + " FROM daz_retry_queue AS q WHERE q.id = ANY(%s)",
            [ids],
        ).fetchall()
    )
    return [rows[i] for i in ids]


async def both_ways(
    db: psycopg.Connection[Any],
    qconn: psycopg.AsyncConnection[Any],
    items: list[dict[str, Any]],
    now: datetime | None = T0,
) -> tuple[list[Any], list[Any]]:
    """The rows add_many stores (over qconn) and the rows enqueue_retry_items
    stores (over db; with now=None, the calls' clocks differ: their delays are
    compared instead)."""
    added = await AsyncRetryQueue(qconn).add_many(items, now=now)
    reference = db.execute(
        "SELECT id FROM enqueue_retry_items(p_items => %s, p_now => coalesce(%s, now()))",
        [Jsonb([sql_element(i) for i in items], dumps=_sql.dumps), now],
    ).fetchall()
    clock = now is not None
    return (
        stored(db, [a.id for a in added], clock=clock),
        stored(db, [r[0] for r in reference], clock=clock),
    )


ITEMS: list[dict[str, Any]] = [
    {"event_type": "plain", "data": {"k": "v"}},
    {
        "event_type": "every field",
        "data": [1, "two", None, 3.5, {"n": {"m": True}}],
        "channel": "lobby",
        "plugin": "chat",
        "metadata": {"retry_reason": "x", "nested": {"a": [1]}},
        "max_retries": 7,
        "retry_delay": 1.5,
        "backoff_multiplier": 3.25,
        "priority": 9,
        "correlation_id": "corr-1",
        "tags": ["a", "b c", 'q"uote', "back\\slash", "{brace}", "ünï", "", "NULL"],
        "delay": 90,
        "max_retry_delay": 3600,
        "retry_jitter": 0.25,
    },
    {
        "event_type": "durations",
        "data": "a string",
        "retry_delay": timedelta(milliseconds=250),
        "delay": timedelta(seconds=1, microseconds=1),
        "max_retry_delay": timedelta(hours=2),
    },
    # make_interval rounds to whole microseconds, half to even
    {"event_type": "rounding", "data": 0, "delay": 0.0000005},
    {"event_type": "rounding", "data": 1, "delay": 0.0000015},
    {"event_type": "rounding", "data": 2, "delay": 0.0000025},
    {"event_type": "rounding", "data": 3, "delay": 12345.6789012345},
    {"event_type": "rounding", "data": 4, "delay": 1e-9, "retry_delay": 1e-9},
    # where timedelta(seconds=d) rounds the other way (d * 1e6 ends in .5)
    {"event_type": "rounding", "data": 5, "delay": 24873179.6014095},
    {"event_type": "rounding", "data": 6, "delay": 29810056.6549885},
    {"event_type": "longest delay", "data": False, "delay": 31536000},
    {
        "event_type": "explicit defaults",
        "data": {},
        "max_retries": 3,
        "retry_delay": 60,
        "backoff_multiplier": 2,
        "priority": 5,
        "metadata": {},
        "tags": [],
        "delay": 0,
        "max_retry_delay": 86400,
        "retry_jitter": 0,
    },
    {
        "event_type": "Nones",
        "data": {},
        "channel": None,
        "metadata": None,
        "max_retries": None,
        "tags": None,
        "delay": None,
        "retry_jitter": None,
    },
    {
        "event_type": "text",
        "data": {"s": 'tab\t nl\n cr\r quote" backslash\\ é ☃ \u2028 😀 \x7f'},
        "correlation_id": "ünï\t",
        "channel": "",
    },
    {
        "event_type": "python values",
        "data": {
            "when": T0,
            "id": UUID(int=1),
            "amount": Decimal("1.10"),
            "raw": b"\x01\xff",
            "pair": (1, 2),
        },
    },
    {"event_type": "numbers", "data": [2**63, 1e300, -0.0, 1.5e-10, -(2**70)]},
    {"event_type": "top-level", "data": None},
]


async def test_add_many_stores_what_enqueue_retry_items_stores(
    db: psycopg.Connection[Any], qconn: psycopg.AsyncConnection[Any]
) -> None:
    items = [i for i in ITEMS if i["data"] is not None]
    mine, reference = await both_ways(db, qconn, items)
    for item, got, want in zip(items, mine, reference, strict=True):
        assert got == want, item["event_type"]
    # and as NewItems from item() (not the mappings), in one call with the rest
    q = AsyncRetryQueue(qconn)
    fields = [{k: v for k, v in i.items() if v is not None} for i in items]
    news = [q.item(f.pop("event_type"), f.pop("data"), **f) for f in fields]
    again = await q.add_many([*news, *items], now=T0)
    assert stored(db, [a.id for a in again]) == mine + mine


async def test_add_many_clock_in_a_zone_with_daylight_saving(
    db: psycopg.Connection[Any], qconn: psycopg.AsyncConnection[Any]
) -> None:
    """next_retry_at is now + delay as an instant, whatever the session's zone;
    a naive now is read in that zone, as the SQL functions read it."""
    db.execute("SET TimeZone = 'America/New_York'")
    await qconn.execute("SET TimeZone = 'America/New_York'")
    # clocks in New York go from 02:00 to 03:00 on 2030-03-10 (07:00 UTC)
    before = datetime(2030, 3, 10, 6, 30, tzinfo=timezone.utc)
    items: list[dict[str, Any]] = [
        {"event_type": "dst", "data": n, "delay": d} for n, d in enumerate((0, 1800, 3600, 86400))
    ]
    for now in (before, datetime(2030, 3, 10, 1, 30), None):
        mine, reference = await both_ways(db, qconn, items, now)
        assert mine == reference, now
    (one,) = await AsyncRetryQueue(qconn).add_many([items[2]], now=before)
    row = await AsyncRetryQueue(qconn).get(one.id)
    assert row is not None
    assert row.next_retry_at.timestamp() - row.created_at.timestamp() == 3600
    assert row.next_retry_at.astimezone(timezone.utc) == before + timedelta(hours=1)


async def test_add_many_takes_the_queues_own_defaults(
    db: psycopg.Connection[Any], qconn: psycopg.AsyncConnection[Any]
) -> None:
    cfg = RetryConfig(max_retries=7, initial_delay=1.5, backoff_multiplier=4.0)
    q = AsyncRetryQueue(qconn, config=cfg)
    a, b = await q.add_many(
        [
            {"event_type": "e", "data": 1},
            {
                "event_type": "e",
                "data": 2,
                "max_retries": 3,
                "retry_delay": 60,
                "backoff_multiplier": 2,
            },
        ],
        now=T0,
    )
    want = [
        {
            "event_type": "e",
            "data": 1,
            "max_retries": 7,
            "retry_delay": 1.5,
            "backoff_multiplier": 4.0,
        },
        {"event_type": "e", "data": 2},
    ]
    reference = db.execute(
        "SELECT id FROM enqueue_retry_items(%s, %s)",
        [Jsonb([sql_element(i) for i in want]), T0],
    ).fetchall()
    assert stored(db, [a.id, b.id]) == stored(db, [r[0] for r in reference])


async def test_add_many_returns_ids_and_event_ids_in_input_order(
    db: psycopg.Connection[Any], qconn: psycopg.AsyncConnection[Any]
) -> None:
    q = AsyncRetryQueue(qconn)
    added = await q.add_many(({"event_type": "e", "data": n} for n in range(300)), now=T0)
    assert all(type(a) is Enqueued for a in added)
    assert [a.id for a in added] == sorted(a.id for a in added)
    rows = dict(db.execute("SELECT id, event_id FROM daz_retry_queue").fetchall())
    assert {a.id: a.event_id for a in added} == rows
    assert len({a.event_id for a in added}) == 300
    assert {(a.event_id.version, a.event_id.variant) for a in added} == {
        (4, "specified in RFC 4122")
    }
    data = db.execute("SELECT event_data FROM daz_retry_queue ORDER BY id").fetchall()
    assert [d for (d,) in data] == list(range(300))
    assert await q.add_many([]) == []
    assert await q.add_many(iter([])) == []


async def test_add_many_finds_its_ids_when_other_ids_come_between(
    db: psycopg.Connection[Any], qconn: psycopg.AsyncConnection[Any]
) -> None:
    """The rows take their ids from the column's default (a producer may not
    name one). When ids drawn elsewhere come between them (here a trigger
    draws one after each row, as another session's enqueue would), add_many
    looks its ids up by event id, still in input order."""
    db.execute(
        "CREATE FUNCTION pg_temp.draw() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN PERFORM nextval('daz_retry_queue_id_seq'); RETURN NEW; END$$"
    )
    db.execute(
        "CREATE TRIGGER t_draw BEFORE INSERT ON _retryq_active"
        " FOR EACH ROW EXECUTE FUNCTION pg_temp.draw()"
    )
    try:
        q = AsyncRetryQueue(qconn)
        added = await q.add_many([{"event_type": "e", "data": n} for n in range(50)])
    finally:
        db.execute("DROP TRIGGER t_draw ON _retryq_active")
    rows = db.execute("SELECT id, event_id, event_data FROM daz_retry_queue").fetchall()
    assert {a.id: a.event_id for a in added} == {i: e for i, e, _ in rows}
    assert [d for _, _, d in sorted(rows)] == list(range(50))
    assert [a.id for a in added] == sorted(a.id for a in added)
    assert added[-1].id - added[0].id > 49  # the other path was taken
    # and without anything between: the mark's successors
    more = await q.add_many([{"event_type": "e", "data": n} for n in range(5)])
    assert [a.id for a in more] == list(range(more[0].id, more[0].id + 5))
    assert db.execute(
        "SELECT array_agg(event_id ORDER BY id) FROM daz_retry_queue WHERE id >= %s",
        (more[0].id,),
    ).fetchone() == ([a.event_id for a in more],)


async def test_add_many_dates_items_by_its_statement_not_the_transaction(
    db: psycopg.Connection[Any], module_dsn: str
) -> None:
    """In a caller's transaction that has run for a while, the items were
    dated from the transaction's start (now()), overdue on arrival."""
    async with await psycopg.AsyncConnection.connect(module_dsn) as conn:
        await conn.execute("SELECT pg_sleep(1.5)")
        await AsyncRetryQueue(conn).add_many([{"event_type": "late", "data": 1}])
        cur = await conn.execute("SELECT now()")
        started = (await cur.fetchone() or (None,))[0]
        await conn.commit()
    assert db.execute(
        "SELECT created_at - %s >= interval '1.5 s', next_retry_at = created_at"
        " FROM daz_retry_queue WHERE event_type = 'late'",
        (started,),
    ).fetchone() == (True, True)


BAD_ITEMS: list[tuple[Any, type[BaseException], str]] = [
    ({"event_type": "no data"}, ValueError, "every item needs 'data'"),
    ({"data": 1}, ValueError, "every item needs 'event_type'"),
    ({"event_type": "e", "data": 1, "colour": "red"}, TypeError, "unknown item key 'colour'"),
    ({"event_type": "e", "data": 1, "delay": -1}, pgerr.InvalidParameterValue, "delay_seconds"),
    ({"event_type": "e", "data": 1, "delay": 31536001}, pgerr.InvalidParameterValue, "delay"),
    ({"event_type": "e", "data": 1, "delay": math.nan}, pgerr.InvalidParameterValue, "delay"),
    ({"event_type": "e", "data": 1, "delay": "5s"}, TypeError, "delay"),
    ({"event_type": "e", "data": 1, "delay": False}, TypeError, "delay"),
    ({"event_type": "e", "data": 1, "retry_delay": True}, TypeError, "retry_delay"),
    (
        {"event_type": "e", "data": 1, "priority": 2**32 + 5},
        pgerr.NumericValueOutOfRange,
        "priority",
    ),
    (
        {"event_type": "e", "data": 1, "max_retries": -(2**40)},
        pgerr.NumericValueOutOfRange,
        "max_retries",
    ),
    ({"event_type": "e", "data": 1, "priority": True}, TypeError, "priority"),
    ({"event_type": "e", "data": 1, "priority": 1.5}, TypeError, "priority"),
    ({"event_type": "e", "data": 1, "max_retries": "3"}, TypeError, "max_retries"),
    ({"event_type": "e", "data": 1, "backoff_multiplier": "2"}, TypeError, "backoff_multiplier"),
    ({"event_type": "e", "data": 1, "retry_jitter": False}, TypeError, "retry_jitter"),
    ({"event_type": 5, "data": 1}, TypeError, "event_type"),
    ({"event_type": "e", "data": 1, "plugin": b"p"}, TypeError, "plugin"),
    ({"event_type": "e", "data": 1, "tags": ["a", 1]}, TypeError, "tags"),
    # a NULL tag is refused by the table, on every enqueue path
    ({"event_type": "e", "data": 1, "tags": ("x", None)}, pgerr.NullValueNotAllowed, "tags"),
    ({"event_type": "e", "data": 1, "metadata": [1]}, TypeError, "item [0-9]+: metadata: expected"),
    # a str is no list of tags (it was stored as {a,b,c})
    (
        {"event_type": "e", "data": 1, "tags": "abc"},
        TypeError,
        "item [0-9]+: tags: expected a list",
    ),
    # NaN and the infinities, named (were jsonb's unnamed 22P02)
    (
        {"event_type": "e", "data": {"a": math.nan}},
        pgerr.InvalidTextRepresentation,
        r"item [0-9]+: invalid data: data\['a'\] is NaN or an infinity",
    ),
    (
        {"event_type": "e", "data": 1, "metadata": {"a": [-math.inf]}},
        pgerr.InvalidTextRepresentation,
        r"item [0-9]+: invalid metadata: metadata\['a'\]\[0\]",
    ),
    # beyond int4: the item named too
    (
        {"event_type": "e", "data": 1, "priority": 2**40},
        pgerr.NumericValueOutOfRange,
        "item [0-9]+: invalid priority",
    ),
    # not an item at all (was AttributeError)
    ("x", TypeError, "item [0-9]+: expected a NewItem or a mapping"),
    ({"event_type": "e", "data": {"x": object()}}, TypeError, "cannot store object"),
    ({"event_type": "e", "data": None}, pgerr.NotNullViolation, "event_data"),
    ({"event_type": None, "data": 1}, pgerr.NotNullViolation, "event_type"),
    ({"event_type": " ", "data": 1}, pgerr.CheckViolation, "daz_retry_queue_event_type_check"),
    ({"event_type": "e", "data": 1, "priority": 0}, pgerr.CheckViolation, "priority_check"),
    ({"event_type": "e", "data": 1, "max_retries": 1001}, pgerr.CheckViolation, "max_retries"),
    (
        {"event_type": "e", "data": 1, "retry_delay": math.inf},
        pgerr.CheckViolation,
        "retry_delay_seconds_check",
    ),
    ({"event_type": "e", "data": 1, "retry_jitter": 2}, pgerr.CheckViolation, "retry_jitter"),
    (
        {"event_type": "e", "data": "\x00"},
        pgerr.UntranslatableCharacter,
        "item [0-9]+: invalid data",
    ),
    (
        {"event_type": "e\x00", "data": 1},
        pgerr.CharacterNotInRepertoire,
        "item [0-9]+: invalid event_type",
    ),
]


@pytest.mark.parametrize("keyed", [False, True], ids=["copy", "keyed"])
@pytest.mark.parametrize(("bad", "error", "named"), BAD_ITEMS)
async def test_a_bad_item_adds_nothing(
    db: psycopg.Connection[Any],
    qconn: psycopg.AsyncConnection[Any],
    bad: Any,
    error: type[BaseException],
    named: str,
    keyed: bool,
) -> None:
    """First, last or alone in a call, by COPY or (an item with a dedupe
    key) by enqueue_retry_items: the error names the item by its index,
    whether Python or only the SQL refuses it; nothing added, and the
    connection still usable."""
    q = AsyncRetryQueue(qconn)
    good: list[Any] = [{"event_type": "ok", "data": n} for n in range(600)]
    if keyed:
        good = [{**g, "dedupe_key": f"k{n}"} for n, g in enumerate(good)]
    for items, at in (([bad, *good], 0), ([*good, bad], 600), ([bad], 0)):
        # the keyed path judges by the JSON it sends: a refusal of the same
        # item, not always of the same class (a None payload is refused in
        # Python, NaN is no JSON number)
        with pytest.raises((TypeError, ValueError, psycopg.Error) if keyed else error) as caught:
            await q.add_many(items)
        assert f"item {at}: " in str(caught.value)
        if not keyed:
            assert caught.match(named)
        assert count(db) == 0
    assert len(await q.add_many(good[:2])) == 2


async def test_a_bad_item_in_the_callers_transaction_undoes_only_this_call(
    module_dsn: str,
) -> None:
    """Inside the caller's transaction (open, or opened by add_many on a
    connection without autocommit): a savepoint, nothing committed for the
    caller, and the caller's own work kept."""
    bad = [{"event_type": "ok", "data": 1}, {"event_type": "x", "data": 1, "priority": 11}]
    async with await psycopg.AsyncConnection.connect(module_dsn) as conn:
        await conn.execute("TRUNCATE daz_retry_queue")
        await conn.commit()
        q = AsyncRetryQueue(conn)
        added = await q.add_many([{"event_type": "mine", "data": 0}])
        assert conn.info.transaction_status == TransactionStatus.INTRANS  # not committed
        with pytest.raises(pgerr.CheckViolation):
            await q.add_many(bad)
        with pytest.raises(TypeError):
            await q.add_many([{"event_type": "ok", "data": 1}, {"event_type": 1, "data": 1}])
        assert conn.info.transaction_status == TransactionStatus.INTRANS  # still usable
        assert await count_on(conn) == 1
        await conn.rollback()
        assert await count_on(conn) == 0
        async with conn.transaction():
            await q.add_many([{"event_type": "kept", "data": 0}])
            with pytest.raises(pgerr.CheckViolation):
                await q.add_many(bad)
        cur = await conn.execute("SELECT id, event_type FROM daz_retry_queue")
        rows = await cur.fetchall()
        assert [r[1] for r in rows] == ["kept"] and rows[0][0] > added[0].id


async def test_add_many_with_dedupe_keys(
    db: psycopg.Connection[Any], qconn: psycopg.AsyncConnection[Any]
) -> None:
    """Items with keys: one call of enqueue_retry_items; a key a live item
    holds, or an earlier item of the batch, returns that item, deduplicated."""
    q = AsyncRetryQueue(qconn)
    live = await q.add("e", {"n": "live"}, dedupe_key="live")
    items: list[Any] = [
        {"event_type": "e", "data": 0, "dedupe_key": "a"},
        q.item("e", 1),
        q.item("e", 2, dedupe_key="live"),
        {"event_type": "e", "data": 3, "dedupe_key": "a", "priority": None},
        {"event_type": "e", "data": 4, "delay": timedelta(seconds=5), "tags": ("t",)},
    ]
    added = await q.add_many(items, now=T0)
    assert [type(a) for a in added] == [Enqueued] * 5
    assert [a.deduplicated for a in added] == [False, False, True, True, False]
    assert added[2] == live and added[3] == added[0]
    assert count(db) == 4
    rows = {a.id: await q.get(a.id) for a in added}
    four = rows[added[4].id]
    assert four is not None and four.next_retry_at == T0 + timedelta(seconds=5)
    assert four.tags == ["t"] and rows[added[0].id].dedupe_key == "a"  # type: ignore[union-attr]
    # the same checks as the COPY path before anything is sent
    with pytest.raises(TypeError, match="unknown item key"):
        await q.add_many([{"event_type": "e", "data": 1, "dedupe_key": "b", "colour": 1}])
    with pytest.raises(ValueError, match="every item needs"):
        await q.add_many([{"data": 1, "dedupe_key": "b"}])
    with pytest.raises(pgerr.InvalidParameterValue, match="dedupe_key"):
        await q.add_many([{"event_type": "e", "data": 1, "dedupe_key": ""}])
    assert count(db) == 4


async def test_a_refused_keyed_batch_in_the_callers_transaction_undoes_only_this_call(
    module_dsn: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(module_dsn) as conn:
        await conn.execute("TRUNCATE daz_retry_queue")
        await conn.commit()
        q = AsyncRetryQueue(conn)
        await q.add_many([{"event_type": "mine", "data": 0, "dedupe_key": "m"}])
        with pytest.raises(pgerr.CheckViolation):
            await q.add_many([{"event_type": "x", "data": 1, "priority": 11, "dedupe_key": "n"}])
        assert conn.info.transaction_status == TransactionStatus.INTRANS  # still usable
        again = await q.add_many([{"event_type": "mine", "data": 1, "dedupe_key": "m"}])
        assert again[0].deduplicated and await count_on(conn) == 1
        await conn.rollback()


async def test_add_many_wakes_listeners_once(
    module_dsn: str, qconn: psycopg.AsyncConnection[Any]
) -> None:
    """The table's statement trigger fires for the COPY: one NOTIFY per call, at commit."""
    q = AsyncRetryQueue(qconn)
    channel = await q.channel()
    with psycopg.connect(module_dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel}"')  # type: ignore[arg-type]
        await q.add_many([{"event_type": "e", "data": n} for n in range(50)])
        with pytest.raises(pgerr.CheckViolation):
            await q.add_many([{"event_type": "e", "data": 1}, {"event_type": "", "data": 1}])
        got = [n.payload for n in listener.notifies(timeout=0.5, stop_after=2)]
    assert got == ["insert"]


async def test_add_many_through_a_pool_commits(
    module_dsn: str, db: psycopg.Connection[Any]
) -> None:
    async with AsyncConnectionPool(module_dsn, min_size=1, max_size=1, open=False) as pool:
        items = [{"event_type": "pooled", "data": n} for n in range(3)]
        added = await AsyncRetryQueue(pool).add_many(items)
        with pytest.raises(pgerr.CheckViolation):
            await AsyncRetryQueue(pool).add_many([{"event_type": "", "data": 1}])
    assert len(added) == 3 and count(db) == 3


async def test_add_many_whatever_the_connections_cursors_and_rows(
    module_dsn: str, db: psycopg.Connection[Any], qconn: psycopg.AsyncConnection[Any]
) -> None:
    """Client-side binding (no binary results there) and dict rows, as add() takes them."""
    async with await psycopg.AsyncConnection.connect(
        module_dsn,
        autocommit=True,
        cursor_factory=psycopg.AsyncClientCursor,
        row_factory=dict_row,
    ) as conn:
        added = await AsyncRetryQueue(conn).add_many(ITEMS[:3], now=T0)
        assert [type(a.id) for a in added] == [int] * 3
    reference = await AsyncRetryQueue(qconn).add_many(ITEMS[:3], now=T0)
    assert stored(db, [a.id for a in added]) == stored(db, [r.id for r in reference])


async def test_add_many_in_another_schema(new_database: Any) -> None:
    from retryq_py import migrate

    dsn = new_database()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute('CREATE SCHEMA "Jobs"')
        migrate.apply(dsn, schema="Jobs")
        q = AsyncRetryQueue(conn, schema="Jobs")
        added = await q.add_many([{"event_type": "e", "data": n} for n in range(3)])
        assert [i.id for i in await q.acquire("w")] == [a.id for a in added]
        with pytest.raises(pgerr.UndefinedTable):
            await AsyncRetryQueue(conn).add_many([{"event_type": "e", "data": 1}])


async def test_add_many_is_the_same_over_a_connection_and_a_pool(
    module_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """The rows of RetryQueue.add_many (the sync client, named as such in both
    files), and the same errors, savepoint and pool (was the async client's
    only test of add_many)."""
    items = [i for i in ITEMS if i["data"] is not None]
    sync_ids = [a.id for a in RetryQueue(db).add_many(items, now=T0)]
    async with await psycopg.AsyncConnection.connect(module_dsn, autocommit=True) as conn:
        q = AsyncRetryQueue(conn)
        with pytest.raises(pgerr.CheckViolation):
            await q.add_many([*items, {"event_type": "x", "data": 1, "priority": 0}])
        with pytest.raises(TypeError, match="unknown item key"):
            await q.add_many([*items, {"event_type": "x", "data": 1, "prio": 1}])
        assert await q.add_many([]) == []
        added = await q.add_many(items, now=T0)
        assert [type(a) for a in added] == [Enqueued] * len(items)
        async with conn.transaction():  # the caller's transaction: a savepoint
            with pytest.raises(pgerr.CheckViolation):
                await q.add_many([{"event_type": "x", "data": 1, "priority": 0}])
            assert conn.info.transaction_status == TransactionStatus.INTRANS  # still usable
    async with AsyncConnectionPool(module_dsn, min_size=1, max_size=1, open=False) as pool:
        pooled = await AsyncRetryQueue(pool).add_many(items, now=T0)
    async_ids = [a.id for a in added] + [a.id for a in pooled]
    assert stored(db, async_ids) == stored(db, sync_ids) * 2
    assert count(db) == 3 * len(items)


# -- the same rows, for any items ---------------------------------------------------

text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=8)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
optional = {
    "channel": text,
    # '' is no plugin; a blank name other than '' is refused (0025)
    "plugin": text.filter(lambda s: s == "" or not _sql.is_blank(s)),
    "metadata": st.dictionaries(text, json_values, max_size=3),
    "max_retries": st.integers(0, 1000),
    "retry_delay": st.floats(0, 31536000) | st.integers(0, 31536000),
    "backoff_multiplier": st.floats(1, 10),
    "priority": st.integers(1, 10),
    "correlation_id": text,
    "tags": st.lists(text, max_size=4),
    "delay": st.floats(0, 31536000) | st.timedeltas(timedelta(0), timedelta(days=365)),
    "max_retry_delay": st.floats(0, 31536000),
    "retry_jitter": st.floats(0, 1),
}
new_items = st.fixed_dictionaries(
    {
        # the CHECK's idea of blank is the server's locale's: stay in ASCII
        "event_type": st.text(string.ascii_letters + string.digits + " ._-", min_size=1).filter(
            str.strip
        ),
        "data": json_values.filter(lambda v: v is not None),
    },
    optional={k: st.none() | v for k, v in optional.items()},
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(new_items, min_size=1, max_size=5))
async def test_add_many_matches_enqueue_retry_items_for_any_items(
    db: psycopg.Connection[Any], qconn: psycopg.AsyncConnection[Any], items: list[dict[str, Any]]
) -> None:
    mine, reference = await both_ways(db, qconn, items)
    assert mine == reference
