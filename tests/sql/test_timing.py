"""Retry timing from the handler (issue 14, item 3).

fail_retry_item's p_retry_after_seconds replaces the backoff for one retry,
capped by the item's max_retry_delay_seconds and never jittered;
snooze_retry_item puts a leased item back for a delay without spending an
attempt or recording a failure, up to p_max_snoozes times, then dead-letters
it (snooze_limit). Time is moved with the owner's p_now, never slept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

T0 = "'2030-01-01 00:00:00+00'::timestamptz"


def at(seconds: float) -> str:
    return f"({T0} + make_interval(secs => {seconds}))"


@pytest.fixture
def db(module_dsn: str, module_reset: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
        yield c


def one(c: psycopg.Connection[Any], q: str) -> Any:
    row = c.execute(q).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def leased(c: psycopg.Connection[Any], *, jitter: float = 0.0, max_delay: float = 86400) -> int:
    """One item, created and leased by worker w at T0."""
    item = one(
        c,
        "SELECT id FROM enqueue_retry_item('t', '{}', p_retry_delay_seconds => 10,"
        f" p_max_retry_delay_seconds => {max_delay}, p_retry_jitter => {jitter},"
        f" p_now => {T0})",
    )
    assert one(c, f"SELECT count(*) FROM acquire_retry_items('w', 1, 60, {T0})") == 1
    return int(item)


def row(c: psycopg.Connection[Any], item: int) -> dict[str, Any]:
    cur = c.cursor(row_factory=psycopg.rows.dict_row)
    found = cur.execute("SELECT * FROM daz_retry_queue WHERE id = %s", (item,)).fetchone()
    assert found is not None
    return found


def due_in(c: psycopg.Connection[Any], item: int) -> float:
    return float(
        one(
            c,
            f"SELECT extract(epoch FROM next_retry_at - {T0})"
            f" FROM daz_retry_queue WHERE id = {item}",
        )
    )


def acquired(c: psycopg.Connection[Any], seconds: float) -> list[int]:
    rows = c.execute(  # type: ignore[call-overload]
        f"SELECT id FROM acquire_retry_items('w2', 10, 60, {at(seconds)})"
    ).fetchall()
    return [r[0] for r in rows]


# fail_retry_item(p_retry_after_seconds)


def test_retry_after_replaces_the_backoff(db: psycopg.Connection[Any]) -> None:
    item = leased(db)
    assert one(
        db,
        f"SELECT fail_retry_item({item}, 'w', '429', 'http_429', p_now => {T0},"
        " p_retry_after_seconds => 120)",
    )
    r = row(db, item)
    assert (r["status"], r["retry_count"], r["error_message"]) == ("pending", 1, "429")
    assert due_in(db, item) == 120  # the backoff would say 10
    assert r["error_history"][-1]["retry_after_seconds"] == 120
    assert acquired(db, 119.9) == []
    assert acquired(db, 120) == [item]


def test_retry_after_is_capped_and_not_jittered(db: psycopg.Connection[Any]) -> None:
    capped = leased(db, max_delay=300)
    assert one(
        db,
        f"SELECT fail_retry_item({capped}, 'w', 'x', p_now => {T0}, p_retry_after_seconds => 7200)",
    )
    assert due_in(db, capped) == 300
    # full jitter would shorten a backoff by up to all of it; a Retry-After stays
    db.execute("TRUNCATE daz_retry_queue")
    for _ in range(5):
        item = leased(db, jitter=1.0)
        assert one(
            db,
            f"SELECT fail_retry_item({item}, 'w', 'x', p_now => {T0},"
            " p_retry_after_seconds => 45.5)",
        )
        assert due_in(db, item) == 45.5


def test_retry_after_zero_is_due_at_once_and_the_next_failure_backs_off(
    db: psycopg.Connection[Any],
) -> None:
    item = leased(db)
    assert one(
        db, f"SELECT fail_retry_item({item}, 'w', 'x', p_now => {T0}, p_retry_after_seconds => 0)"
    )
    assert due_in(db, item) == 0
    assert acquired(db, 0) == [item]
    assert one(db, f"SELECT fail_retry_item({item}, 'w2', 'x', p_now => {T0})")
    assert due_in(db, item) == 20  # the backoff of retry 2: 10 * 2


def test_retry_after_does_not_outlive_the_budget(db: psycopg.Connection[Any]) -> None:
    item = one(
        db, f"SELECT id FROM enqueue_retry_item('t', '{{}}', p_max_retries => 0, p_now => {T0})"
    )
    one(db, f"SELECT count(*) FROM acquire_retry_items('w', 1, 60, {T0})")
    assert one(
        db, f"SELECT fail_retry_item({item}, 'w', 'x', p_now => {T0}, p_retry_after_seconds => 60)"
    )
    assert row(db, item)["status"] == "dead_letter"


@pytest.mark.parametrize("bad", ["-1", "31536001", "'NaN'", "'Infinity'"])
def test_retry_after_out_of_range_is_refused_by_name(db: psycopg.Connection[Any], bad: str) -> None:
    item = leased(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        db.execute(  # type: ignore[call-overload]
            f"SELECT fail_retry_item({item}, 'w', 'x', p_retry_after_seconds => {bad})"
        )
    assert caught.value.diag.column_name == "retry_after_seconds"
    assert row(db, item)["status"] == "processing"


# snooze_retry_item


def test_snooze_spends_no_attempt_and_records_no_failure(db: psycopg.Connection[Any]) -> None:
    item = leased(db)
    assert one(db, f"SELECT fail_retry_item({item}, 'w', 'first', 'E1', p_now => {T0})")
    assert acquired(db, 10) == [item]
    before = row(db, item)
    assert one(db, f"SELECT snooze_retry_item({item}, 'w2', 300, p_now => {at(10)})")
    after = row(db, item)
    assert after["status"] == "pending"
    assert (after["locked_by"], after["locked_until"]) == (None, None)
    assert due_in(db, item) == 310
    for kept in ("retry_count", "error_message", "last_error_code", "error_history", "max_retries"):
        assert after[kept] == before[kept], kept
    assert after["event_metadata"] == {"retryq_snoozes": 1}
    assert acquired(db, 309) == []
    assert acquired(db, 310) == [item]


def test_snooze_needs_the_live_lease(db: psycopg.Connection[Any]) -> None:
    item = leased(db)
    assert one(db, f"SELECT snooze_retry_item({item}, 'other', 5, p_now => {T0})") is False
    assert one(db, f"SELECT snooze_retry_item({item + 100}, 'w', 5, p_now => {T0})") is False
    # taken over after the lease ran out: the old holder may not snooze it
    assert acquired(db, 61) == [item]
    assert one(db, f"SELECT snooze_retry_item({item}, 'w', 5, p_now => {at(61)})") is False
    assert one(db, f"SELECT snooze_retry_item({item}, 'w2', 5, p_now => {at(61)})") is True
    # a second call: the lease is gone
    assert one(db, f"SELECT snooze_retry_item({item}, 'w2', 5, p_now => {at(61)})") is False
    assert row(db, item)["event_metadata"] == {"retryq_snoozes": 1}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ("' ', 5", "worker_id"),
        ("'w', -1", "delay_seconds"),
        ("'w', 'NaN'", "delay_seconds"),
        ("'w', NULL", "delay_seconds"),
        ("'w', 31536001", "delay_seconds"),
        ("'w', 5, -1", "max_snoozes"),
        ("'w', 5, 10001", "max_snoozes"),
    ],
)
def test_snooze_refuses_bad_values_by_name(
    db: psycopg.Connection[Any], args: str, field: str
) -> None:
    item = leased(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        db.execute(f"SELECT snooze_retry_item({item}, {args})")  # type: ignore[call-overload]
    assert caught.value.diag.column_name == field
    assert row(db, item)["status"] == "processing"


def test_snoozing_is_bounded_then_dead_letters(db: psycopg.Connection[Any]) -> None:
    item = leased(db)
    t, holder = 0, "w"
    for _ in range(3):
        assert one(db, f"SELECT snooze_retry_item({item}, '{holder}', 1, 3, {at(t)})") is True
        t, holder = t + 1, "w2"
        assert acquired(db, t) == [item]
    # three snoozes allowed: the fourth buries it, visibly
    assert row(db, item)["event_metadata"] == {"retryq_snoozes": 3}
    assert one(db, f"SELECT snooze_retry_item({item}, 'w2', 1, 3, {at(t)})") is True
    r = row(db, item)
    assert r["status"] == "dead_letter"
    assert r["last_error_code"] == "snooze_limit"
    assert "snoozed 3 times" in r["error_message"]
    assert r["retry_count"] == 0
    assert r["error_history"][-1]["code"] == "snooze_limit"
    assert r["error_history"][-1]["retryable"] is False
    # a requeue gives a fresh budget of snoozes as of attempts
    assert one(db, f"SELECT requeue_dead_letter_items(ARRAY[{item}], p_now => {at(t)})") == 1
    assert "retryq_snoozes" not in row(db, item)["event_metadata"]
    assert acquired(db, t) == [item]
    assert one(db, f"SELECT snooze_retry_item({item}, 'w2', 1, 3, {at(t)})") is True
    assert row(db, item)["status"] == "pending"


def test_snooze_ignores_a_count_that_is_not_a_number(db: psycopg.Connection[Any]) -> None:
    item = one(
        db,
        "SELECT id FROM enqueue_retry_item('t', '{}',"
        f' p_event_metadata => \'{{"retryq_snoozes": "many", "k": 1}}\', p_now => {T0})',
    )
    one(db, f"SELECT count(*) FROM acquire_retry_items('w', 1, 60, {T0})")
    assert one(db, f"SELECT snooze_retry_item({item}, 'w', 1, 1, {T0})") is True
    assert row(db, item)["event_metadata"] == {"retryq_snoozes": 1, "k": 1}


def test_snooze_leaves_the_circuit_alone(db: psycopg.Connection[Any]) -> None:
    db.execute("SELECT retry_circuit_configure('t', NULL, 1)")
    item = leased(db)
    assert one(db, f"SELECT snooze_retry_item({item}, 'w', 0, p_now => {T0})") is True
    assert one(db, "SELECT count(*) FROM _retryq_circuit WHERE consecutive_failures > 0") == 0
    assert acquired(db, 0) == [item]
