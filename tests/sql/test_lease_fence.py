"""The lease fence (issue 13 item 4): an acknowledgement that names its lease
(p_leased_at, the grant time) applies to that lease only.

The kind: a worker's outcome for an older lease of an item lands on a newer
lease of the same item held by the same worker id. A reply was lost (the
outcome or the renewal committed, the worker did not hear it) and the item
was leased to the worker again meanwhile; by worker and id alone the SQL
cannot tell the stale acknowledgement from a fresh one, so it completed,
failed, snoozed or renewed the newer lease while its handler ran.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.sql.test_sql_functions import T0, acquire, ids, row, s, scalar
from tests.sql.test_sql_functions import enqueue as add

Conn = psycopg.Connection[Any]
LOCK = 60


@pytest.fixture
def dsn(module_dsn: str, module_reset: str) -> str:
    """The module's database, emptied before each test."""
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
    return module_dsn


def lease(conn: Conn, now: datetime, worker: str = "w1") -> dict[str, Any]:
    (got,) = acquire(conn, worker, lock=LOCK, now=now)
    return got


def token(leased: dict[str, Any]) -> datetime:
    """The lease's grant time, as a client gets it from acquire's row."""
    at: datetime = leased["locked_until"] - s(LOCK)
    return at


def ack(conn: Conn, kind: str, item: int, now: datetime, leased_at: Any) -> bool:
    """One acknowledgement of `kind` by w1, fenced by `leased_at`."""
    common = {"worker_id": "w1", "now": now}
    if kind == "release":  # a shutdown's give-back: no clock of its own
        return (
            scalar(
                conn,
                "release_retry_items",
                item_ids=[item],
                worker_id="w1",
                leased_at=None if leased_at is None else [leased_at],
            )
            == 1
        )
    if kind == "complete":
        return bool(
            scalar(conn, "complete_retry_item", item_id=item, leased_at=leased_at, **common)
        )
    if kind == "complete_many":
        return (
            scalar(
                conn,
                "complete_retry_items",
                item_ids=[item],
                leased_at=None if leased_at is None else [leased_at],
                **common,
            )
            == 1
        )
    if kind == "fail":
        return bool(
            scalar(
                conn,
                "fail_retry_item",
                item_id=item,
                error_msg="stale",
                error_code="STALE",
                leased_at=leased_at,
                **common,
            )
        )
    if kind == "snooze_outcome":
        return (
            scalar(
                conn,
                "snooze_retry_item_outcome",
                item_id=item,
                delay_seconds=30.0,
                leased_at=leased_at,
                **common,
            )
            == "snoozed"
        )
    if kind == "snooze":
        return bool(
            scalar(
                conn,
                "snooze_retry_item",
                item_id=item,
                delay_seconds=30.0,
                leased_at=leased_at,
                **common,
            )
        )
    assert kind == "extend"
    return bool(
        scalar(
            conn,
            "extend_retry_lock",
            item_id=item,
            lock_timeout_seconds=600,
            leased_at=leased_at,
            **common,
        )
    )


KINDS = ["complete", "complete_many", "fail", "snooze", "extend", "release"]


def enqueue(conn: Conn) -> int:
    """An item due at once again after a failure."""
    return add(conn, retry_delay_seconds=0.0)


def releasing(conn: Conn, how: str, item: int, leased_at: datetime) -> None:
    """The older lease ends by w1's own outcome, written while its reply was
    lost: a failure due at once, or a snooze of no delay."""
    if how == "fail":
        assert scalar(
            conn,
            "fail_retry_item",
            item_id=item,
            worker_id="w1",
            error_msg="first",
            now=T0 + s(1),
            leased_at=leased_at,
        )
    else:
        assert scalar(
            conn,
            "snooze_retry_item",
            item_id=item,
            worker_id="w1",
            delay_seconds=0.0,
            now=T0 + s(1),
            leased_at=leased_at,
        )


@pytest.mark.parametrize("ended_by", ["fail", "snooze"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_ack_of_an_older_lease_never_lands_on_the_newer_one(
    conn: Conn, kind: str, ended_by: str
) -> None:
    item = enqueue(conn)
    first = lease(conn, T0)
    releasing(conn, ended_by, item, token(first))
    second = lease(conn, T0 + s(2))  # the same worker leases the item again
    assert ids([second]) == [item] and token(second) != token(first)
    before = row(conn, item)

    assert not ack(conn, kind, item, T0 + s(3), token(first)), "the stale ack was applied"
    after = row(conn, item)
    assert after == before, "the stale ack changed the newer lease"
    # the newer lease's own acknowledgement still applies
    assert ack(conn, kind, item, T0 + s(4), token(second))


@pytest.mark.parametrize("kind", KINDS)
def test_the_token_outlives_renewals_and_null_fences_nothing(conn: Conn, kind: str) -> None:
    item = add(conn)
    leased = lease(conn, T0)
    assert row(conn, item)["last_attempted_at"] == token(leased) == T0
    for i in (1, 2):  # the heartbeat moves locked_until, never the grant time
        assert scalar(
            conn,
            "extend_retry_lock",
            item_id=item,
            worker_id="w1",
            lock_timeout_seconds=LOCK,
            now=T0 + s(10 * i),
            leased_at=token(leased),
        )
    assert row(conn, item)["locked_until"] == T0 + s(20 + LOCK)
    assert ack(conn, kind, item, T0 + s(30), token(leased))

    other = add(conn)
    # (a released item is leased again with it)
    assert other in ids(acquire(conn, "w1", lock=LOCK, now=T0 + s(40)))
    assert ack(conn, kind, other, T0 + s(41), None)  # as before the fence


def test_complete_retry_items_completes_only_the_named_leases(conn: Conn) -> None:
    a, b = enqueue(conn), enqueue(conn)
    first = {r["id"]: token(r) for r in acquire(conn, "w1", lock=LOCK, now=T0)}
    assert set(first) == {a, b}
    # a's lease ends (its release written, the reply lost) and w1 leases it again
    assert scalar(conn, "release_retry_items", item_ids=[a], worker_id="w1") == 1
    assert ids(acquire(conn, "w1", lock=LOCK, now=T0 + s(1))) == [a]
    done = scalar(
        conn,
        "complete_retry_items",
        item_ids=[a, b],
        worker_id="w1",
        now=T0 + s(2),
        leased_at=[first[a], first[b]],
    )
    assert done == 1
    assert (row(conn, a)["status"], row(conn, b)["status"]) == ("processing", "completed")


def test_complete_retry_items_fences_after_a_takeover_in_the_same_transaction(
    conn: Conn,
) -> None:
    """A transaction that took over a lease may not wait for an item, so
    complete_retry_items narrows its ids first (retryq.took_over): the
    grant times must still follow the ids they were given with."""
    a, b, c = enqueue(conn), enqueue(conn), enqueue(conn)
    first = {r["id"]: token(r) for r in acquire(conn, "w1", lock=LOCK, now=T0)}
    assert scalar(conn, "release_retry_items", item_ids=[a], worker_id="w1") == 1
    assert ids(acquire(conn, "w1", lock=LOCK, now=T0 + s(1))) == [a]
    with conn.transaction():
        # c's lease ran out: this acquire takes it over (took_over is set)
        conn.execute("UPDATE daz_retry_queue SET locked_until = %s WHERE id = %s", [T0 + s(2), c])
        assert ids(acquire(conn, "w2", lock=LOCK, now=T0 + s(3))) == [c]
        done = scalar(
            conn,
            "complete_retry_items",
            item_ids=[b, a],
            worker_id="w1",
            now=T0 + s(4),
            leased_at=[first[b], first[a]],
        )
    assert done == 1
    assert (row(conn, a)["status"], row(conn, b)["status"]) == ("processing", "completed")


def test_release_retry_items_releases_only_the_named_leases(conn: Conn) -> None:
    """A release fenced to its leases gives back those and no newer lease of
    the same item (a release retried after its reply was lost, the item
    leased to the same worker again meanwhile), also in a transaction that
    took over leases (which narrows the ids first)."""
    a, b, c = enqueue(conn), enqueue(conn), enqueue(conn)
    first = {r["id"]: token(r) for r in acquire(conn, "w1", lock=LOCK, now=T0)}
    assert scalar(conn, "release_retry_items", item_ids=[a], worker_id="w1") == 1
    assert ids(acquire(conn, "w1", lock=LOCK, now=T0 + s(1))) == [a]
    with conn.transaction():
        conn.execute("UPDATE daz_retry_queue SET locked_until = %s WHERE id = %s", [T0 + s(2), c])
        assert ids(acquire(conn, "w2", lock=LOCK, now=T0 + s(3))) == [c]
        released = scalar(
            conn,
            "release_retry_items",
            item_ids=[b, a],
            worker_id="w1",
            leased_at=[first[b], first[a]],
        )
    assert released == 1
    assert (row(conn, a)["status"], row(conn, b)["status"]) == ("processing", "pending")


@pytest.mark.parametrize("fn", ["complete_retry_items", "release_retry_items"])
@pytest.mark.parametrize(
    "leased_at",
    [[T0], [T0, T0, T0], [T0, None], [[T0], [T0]]],
    ids=["shorter", "longer", "null-element", "two-dimensions"],
)
def test_many_ids_refuse_grant_times_that_do_not_pair_with_the_ids(
    conn: Conn, leased_at: Any, fn: str
) -> None:
    a, b = enqueue(conn), enqueue(conn)
    acquire(conn, "w1", lock=LOCK, now=T0)
    clock = {"now": T0 + s(1)} if fn == "complete_retry_items" else {}
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        scalar(conn, fn, item_ids=[a, b], worker_id="w1", leased_at=leased_at, **clock)
    assert raised.value.diag.column_name == "leased_at"
    assert {row(conn, a)["status"], row(conn, b)["status"]} == {"processing"}


# a grant time with microseconds below the millisecond, as the server's clock
# stamps it; node-postgres (a JS Date) sends it back truncated to .123
UNDER_MS = timedelta(microseconds=123456)


def millis(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


@pytest.mark.parametrize("kind", [*KINDS, "snooze_outcome"])
def test_a_grant_time_kept_to_the_millisecond_fences_its_lease(conn: Conn, kind: str) -> None:
    item = enqueue(conn)
    first = lease(conn, T0 + UNDER_MS)
    assert token(first) == T0 + UNDER_MS != millis(token(first))
    releasing(conn, "fail", item, millis(token(first)))  # the failure is fenced too
    second = lease(conn, T0 + s(2) + UNDER_MS)
    before = row(conn, item)
    # another lease's grant time is still refused, truncated or not
    assert not ack(conn, kind, item, T0 + s(3), millis(token(first)))
    assert row(conn, item) == before
    assert ack(conn, kind, item, T0 + s(4), millis(token(second)))
