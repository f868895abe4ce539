"""One item, one answer, whichever way it is added: add() (enqueue_retry_item),
add_many() (binary COPY) and add_many() with a dedupe key
(enqueue_retry_items' JSON). Before, priority=5.0 found no function on add
(42883), was a TypeError on add_many and was stored by the keyed batch;
priority="5" was stored by add and refused by the other two."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr

from retryq_py import RetryQueue, ops

Conn = psycopg.Connection[Any]


@pytest.fixture
def db(module_dsn: str, module_reset: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(module_reset)  # type: ignore[arg-type]
        yield conn


PATHS: dict[str, Callable[[RetryQueue, dict[str, Any]], Any]] = {
    "add": lambda q, kw: q.add("e", {}, **kw),
    "add_many": lambda q, kw: q.add_many([{"event_type": "e", "data": {}, **kw}]),
    "add_many keyed": lambda q, kw: q.add_many(
        [{"event_type": "e", "data": {}, "dedupe_key": "k", **kw}]
    ),
}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ({"priority": 7.0}, ("priority", 7)),
        ({"max_retries": 2.0}, ("max_retries", 2)),
        ({"backoff_multiplier": 3}, ("backoff_multiplier", 3.0)),
    ],
)
def test_a_whole_float_is_the_integer_on_every_path(
    db: Conn, path: str, given: dict[str, Any], stored: tuple[str, Any]
) -> None:
    PATHS[path](RetryQueue(db), given)
    column, value = stored
    got = db.execute(f"SELECT {column} FROM daz_retry_queue").fetchall()  # type: ignore[arg-type]
    assert got == [(value,)]


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize(
    ("given", "error", "named"),
    [
        ({"priority": 5.5}, TypeError, "priority"),
        ({"priority": "5"}, TypeError, "priority"),
        ({"max_retries": "3"}, TypeError, "max_retries"),
        ({"backoff_multiplier": "2"}, TypeError, "backoff_multiplier"),
        ({"retry_jitter": "0.5"}, TypeError, "retry_jitter"),
        ({"priority": 2**31}, pgerr.NumericValueOutOfRange, "priority: .*between 1 and 10"),
        (
            {"max_retries": 2.0**40},
            pgerr.NumericValueOutOfRange,
            "max_retries: .*between 0 and 1000",
        ),
    ],
)
def test_a_wrong_number_gets_one_answer_on_every_path(
    db: Conn, path: str, given: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        PATHS[path](RetryQueue(db), given)
    assert db.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (0,)


# The queue client's integer parameters: a float was rounded where the
# statement casts it (max_snoozes=3.5 became 4, item ids [1.5] became [2]),
# found no function where it does not (42883), and a string was taken.
INTEGER_CALLS: list[tuple[str, Callable[[RetryQueue, Any], Any], str]] = [
    ("acquire", lambda q, v: q.acquire("w", v), "batch_size"),
    ("complete", lambda q, v: q.complete(v, "w"), "item_id"),
    ("fail", lambda q, v: q.fail(v, "w", "boom"), "item_id"),
    ("snooze", lambda q, v: q.snooze(1, "w", 5, max_snoozes=v), "max_snoozes"),
    ("extend_lock", lambda q, v: q.extend_lock(v, "w"), "item_id"),
    ("complete_many", lambda q, v: q.complete_many([1, v], "w"), r"item_ids\[1\]"),
    ("release", lambda q, v: q.release([v], "w"), r"item_ids\[0\]"),
    ("cancel", lambda q, v: q.cancel([v]), r"item_ids\[0\]"),
    ("requeue", lambda q, v: q.requeue_dead_letters([v]), r"item_ids\[0\]"),
    ("cleanup", lambda q, v: q.cleanup(v), "retention_days"),
    ("cleanup max_rows", lambda q, v: q.cleanup(7, max_rows=v), "max_rows"),
]


@pytest.mark.parametrize(
    ("verb", "call", "named"), INTEGER_CALLS, ids=[c[0] for c in INTEGER_CALLS]
)
@pytest.mark.parametrize("value", [1.5, "1", True])
def test_an_integer_parameter_refuses_what_is_no_whole_number(
    db: Conn, verb: str, call: Callable[[RetryQueue, Any], Any], named: str, value: Any
) -> None:
    q = RetryQueue(db)
    q.add("e", {})
    before = db.execute("SELECT array_agg(q::text) FROM daz_retry_queue AS q").fetchone()
    with pytest.raises(TypeError, match=f"{named}: expected an integer"):
        call(q, value)
    assert db.execute("SELECT array_agg(q::text) FROM daz_retry_queue AS q").fetchone() == before


@pytest.mark.parametrize(
    ("verb", "call", "named"), INTEGER_CALLS, ids=[c[0] for c in INTEGER_CALLS]
)
def test_an_integer_parameter_takes_a_whole_float(
    db: Conn, verb: str, call: Callable[[RetryQueue, Any], Any], named: str
) -> None:
    q = RetryQueue(db)
    q.add("e", {})
    call(q, 1.0)  # the integer 1: no error


def test_a_whole_float_acquires_as_its_integer(db: Conn) -> None:
    q = RetryQueue(db)
    for n in range(3):
        q.add("e", {"n": n})
    leased = q.acquire("w", 2.0)
    assert len(leased) == 2
    assert q.complete_many([float(i.id) for i in leased], "w") == 2


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda c, v: ops.configure_circuit(c, "e", failure_threshold=v), "failure_threshold"),
        (lambda c, v: ops.set_rate_limit(c, "e", max_leases=v), "max_leases"),
    ],
)
def test_an_operator_integer_refuses_what_is_no_whole_number(
    db: Conn, call: Callable[[Conn, Any], Any], named: str
) -> None:
    for value in (2.5, "2"):
        with pytest.raises(TypeError, match=f"{named}: expected an integer"):
            call(db, value)
    call(db, 2.0)


# The whole-number rule, once (_sql.whole): the SQL parameters' TypeError,
# the add_many columns' TypeError and the worker settings' ValueError take
# and refuse the same values, each with its own message.
@pytest.mark.parametrize(
    ("value", "taken"),
    [
        (5, 5),
        (5.0, 5),
        (-0.0, 0),
        (2.0**40, 2**40),
        (True, None),
        (5.5, None),
        (float("nan"), None),
        (float("inf"), None),
        ("5", None),
        (None, None),
    ],
)
def test_the_whole_number_rule_is_one(value: Any, taken: int | None) -> None:
    from retryq_py import _sql
    from retryq_py._queue_base import _int4
    from retryq_py.worker.settings import _whole

    assert _sql.whole(value) == taken
    if taken is None:
        with pytest.raises(
            TypeError, match=f"^{re.escape(f'n: expected an integer, got {value!r}')}$"
        ):
            _sql.integer(value, "n")
        with pytest.raises(TypeError, match=r"^priority: expected an integer"):
            _int4(value, "priority")
        with pytest.raises(ValueError, match=r"^batch_size must be an integer, got"):
            _whole("batch_size", value, 1, 1000)
    else:
        assert _sql.integer(value, "n") == taken and type(_sql.integer(value, "n")) is int
        assert _whole("n", value, -(2**41), 2**41) == taken
