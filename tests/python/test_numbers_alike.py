"""One item, one answer, whichever way it is added: add() (enqueue_retry_item),
add_many() (binary COPY) and add_many() with a dedupe key
(enqueue_retry_items' JSON). Before, priority=5.0 found no function on add
(42883), was a TypeError on add_many and was stored by the keyed batch;
priority="5" was stored by add and refused by the other two."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr

from retryq_py import RetryQueue

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
