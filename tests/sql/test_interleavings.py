"""Scripted orderings over two connections with explicit transactions.

Connection `a` and connection `b` run BEGIN ... COMMIT in the order each test
writes down; the clock is moved with p_now. Where one side must wait for the
other's row lock, it runs in a thread and the test waits until pg_stat_activity
shows it waiting on a lock (with a deadline) before the other side commits. A
side that must NOT wait runs under a short lock_timeout, so waiting fails it.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

Conn = psycopg.Connection[Any]
R = TypeVar("R")

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
DEADLINE = 10.0


def at(secs: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=secs)


@pytest.fixture
def a(dsn: str) -> Iterator[Conn]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '1s'")
        yield conn


@pytest.fixture
def b(dsn: str) -> Iterator[Conn]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '1s'")
        yield conn


@pytest.fixture
def watch(dsn: str) -> Iterator[Conn]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def enqueue(conn: Conn, n: int = 1, **kw: Any) -> list[int]:
    kw.setdefault("p_now", T0)
    names = ", ".join(f"{k} => %({k})s" for k in kw)
    return [
        conn.execute(
            f"SELECT id FROM enqueue_retry_item('job', '{{}}', {names})",  # type: ignore[arg-type]
            kw,
        ).fetchone()[0]  # type: ignore[index]
        for _ in range(n)
    ]


def acquire(
    conn: Conn, worker: str, now: dt.datetime, batch: int = 10, lease: int = 10
) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM acquire_retry_items(%s, %s, %s, %s)", [worker, batch, lease, now]
    ).fetchall()
    return [r[0] for r in rows]


def scalar(conn: Conn, sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def complete(conn: Conn, item: int, worker: str, now: dt.datetime) -> bool:
    return bool(scalar(conn, "SELECT complete_retry_item(%s, %s, %s)", [item, worker, now]))


def fail(conn: Conn, item: int, worker: str, now: dt.datetime, retryable: bool = True) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT fail_retry_item(%s, %s, 'boom', 'E', %s, %s)",
            [item, worker, retryable, now],
        )
    )


def extend(conn: Conn, item: int, worker: str, now: dt.datetime, lease: int = 10) -> bool:
    return bool(
        scalar(conn, "SELECT extend_retry_lock(%s, %s, %s, %s)", [item, worker, lease, now])
    )


def requeue(conn: Conn, ids: list[int], now: dt.datetime) -> int:
    return int(
        scalar(conn, "SELECT requeue_dead_letter_items(p_item_ids => %s, p_now => %s)", [ids, now])
    )


def cleanup(conn: Conn, now: dt.datetime, days: int = 0) -> tuple[int, int]:
    row = conn.execute(
        "SELECT deleted_count, archived_count FROM cleanup_retry_queue("
        " p_retention_days => %s, p_now => %s)",
        [days, now],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def state(conn: Conn, item: int) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT status, retry_count, locked_by FROM daz_retry_queue WHERE id = %s", [item]
    ).fetchone()


def blocked(conn: Conn, watch: Conn, fn: Callable[[], R]) -> concurrent.futures.Future[R]:
    """Runs fn (which uses conn) in a thread; returns once the server shows
    conn's backend waiting on a lock, or fails at the deadline."""
    pid = conn.info.backend_pid
    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(fn)
    pool.shutdown(wait=False)
    end = time.monotonic() + DEADLINE
    while True:
        waiting = watch.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()
        if waiting and waiting[0]:
            return fut
        if fut.done():
            raise AssertionError(f"expected to wait for a lock, but finished: {fut.result()!r}")
        if time.monotonic() > end:
            raise AssertionError("never started waiting for the lock")
        time.sleep(0.005)  # polling the condition, not synchronising by time


def leased(conn: Conn, item: int, worker: str = "w1", lease: int = 10) -> None:
    """Puts item under worker's lease taken at T0 (expires at T0 + lease)."""
    assert acquire(conn, worker, T0, batch=1, lease=lease) == [item]


# --- acquire vs acquire ------------------------------------------------------------


def test_acquire_vs_acquire_take_disjoint_items_without_waiting(a: Conn, b: Conn) -> None:
    ids = enqueue(a, 4)
    a.execute("BEGIN")
    first = acquire(a, "w1", T0, batch=2)
    # b runs while a's leases are uncommitted: it must skip a's rows, not wait
    second = acquire(b, "w2", T0, batch=10)
    a.execute("COMMIT")
    assert first == ids[:2]
    assert second == ids[2:]
    assert acquire(b, "w3", T0) == []
    owners = dict(a.execute("SELECT id, locked_by FROM daz_retry_queue").fetchall())
    assert owners == {ids[0]: "w1", ids[1]: "w1", ids[2]: "w2", ids[3]: "w2"}


@pytest.mark.parametrize("statement", ["lighter", "full"])
def test_routed_acquires_take_disjoint_items_without_waiting(
    a: Conn, b: Conn, statement: str
) -> None:
    # a routed acquire locks its candidates by primary key: b's candidates
    # are a's uncommitted leases, which it skips, and its walk goes on past
    # them (a pause of another type sends both through the full statement)
    if statement == "full":
        a.execute("SELECT retry_queue_pause('elsewhere')")
    ids = enqueue(a, 6)
    routed = "SELECT id FROM acquire_retry_items(%s, %s, 10, %s, p_event_types => %s)"
    a.execute("BEGIN")
    first = [r[0] for r in a.execute(routed, ["w1", 2, T0, ["job"]]).fetchall()]
    second = [r[0] for r in b.execute(routed, ["w2", 2, T0, ["job", "x"]]).fetchall()]
    a.execute("COMMIT")
    assert first == ids[:2]
    assert second == ids[2:4]
    assert [r[0] for r in b.execute(routed, ["w3", 10, T0, ["job"]]).fetchall()] == ids[4:]


def test_acquire_vs_acquire_split_a_rate_limit_s_tokens_without_waiting(a: Conn, b: Conn) -> None:
    a.execute("SELECT retry_rate_limit_set('job', NULL, 3, 60)")
    ids = enqueue(a, 6)
    a.execute("BEGIN")
    first = acquire(a, "w1", T0, batch=2)
    # b runs while a's tokens are taken but uncommitted: it must skip them,
    # not wait, and gets the one token left
    second = acquire(b, "w2", T0, batch=10)
    a.execute("COMMIT")
    assert first == ids[:2]
    assert second == ids[2:3]
    assert acquire(b, "w3", T0) == []


def test_acquire_rolled_back_leaves_items_for_the_next(a: Conn, b: Conn) -> None:
    ids = enqueue(a, 2)
    a.execute("BEGIN")
    assert acquire(a, "w1", T0) == ids
    assert acquire(b, "w2", T0) == []
    a.execute("ROLLBACK")
    assert acquire(b, "w2", T0) == ids


def test_two_takeovers_of_one_expired_lease_count_one_attempt(a: Conn, b: Conn) -> None:
    (item,) = enqueue(a, p_max_retries=3)
    leased(a, item)
    a.execute("BEGIN")
    assert acquire(a, "w2", at(20)) == [item]
    assert acquire(b, "w3", at(20)) == []  # skipped while a holds the row
    a.execute("COMMIT")
    assert acquire(b, "w3", at(20)) == []  # a's new lease runs to T0+30
    assert state(a, item) == ("processing", 1, "w2")


# --- complete vs lease expiry and takeover -----------------------------------------


def test_complete_after_expiry_before_takeover_wins(a: Conn, b: Conn) -> None:
    (item,) = enqueue(a)
    leased(a, item)
    a.execute("BEGIN")
    # expired at T0+10, but nobody took it over: the holder may still finish
    assert complete(a, item, "w1", at(20))
    assert acquire(b, "w2", at(20)) == []  # the row is locked by a: skipped
    a.execute("COMMIT")
    assert acquire(b, "w2", at(20)) == []  # and now it is finished
    assert state(a, item) == ("completed", 0, None)


def test_takeover_before_complete_makes_the_late_complete_false(
    a: Conn, b: Conn, watch: Conn
) -> None:
    (item,) = enqueue(a)
    leased(a, item)
    b.execute("BEGIN")
    assert acquire(b, "w2", at(20)) == [item]
    late = blocked(a, watch, lambda: complete(a, item, "w1", at(21)))
    b.execute("COMMIT")
    assert late.result(DEADLINE) is False  # w1 lost the lease: its work must be undone
    assert state(a, item) == ("processing", 1, "w2")
    entry = scalar(a, "SELECT error_history -> -1 FROM daz_retry_queue WHERE id = %s", [item])
    assert (entry["code"], entry["worker_id"]) == ("lease_expired", "w1")
    assert complete(b, item, "w2", at(22))
    assert state(a, item) == ("completed", 1, None)


# --- fail vs complete ----------------------------------------------------------------


def test_fail_first_then_complete_is_refused(a: Conn, b: Conn, watch: Conn) -> None:
    (item,) = enqueue(a, p_retry_delay_seconds=5)
    leased(a, item)
    a.execute("BEGIN")
    assert fail(a, item, "w1", at(1))
    late = blocked(b, watch, lambda: complete(b, item, "w1", at(1)))
    a.execute("COMMIT")
    assert late.result(DEADLINE) is False
    assert state(a, item) == ("pending", 1, None)
    assert scalar(a, "SELECT next_retry_at FROM daz_retry_queue WHERE id = %s", [item]) == at(6)


def test_complete_first_then_fail_is_refused(a: Conn, b: Conn, watch: Conn) -> None:
    (item,) = enqueue(a)
    leased(a, item)
    a.execute("BEGIN")
    assert complete(a, item, "w1", at(1))
    late = blocked(b, watch, lambda: fail(b, item, "w1", at(1)))
    a.execute("COMMIT")
    assert late.result(DEADLINE) is False
    assert state(a, item) == ("completed", 0, None)


# --- extend vs expiry ----------------------------------------------------------------


def test_extend_after_expiry_before_takeover_keeps_the_lease(a: Conn, b: Conn) -> None:
    (item,) = enqueue(a)
    leased(a, item)
    a.execute("BEGIN")
    assert extend(a, item, "w1", at(15), lease=10)  # expired at T0+10, now until T0+25
    assert acquire(b, "w2", at(16)) == []  # locked: skipped
    a.execute("COMMIT")
    assert acquire(b, "w2", at(24)) == []  # still w1's
    assert acquire(b, "w2", at(25)) == [item]  # expired again: taken over
    assert state(a, item) == ("processing", 1, "w2")


def test_takeover_before_extend_makes_the_extend_false(a: Conn, b: Conn, watch: Conn) -> None:
    (item,) = enqueue(a)
    leased(a, item)
    b.execute("BEGIN")
    assert acquire(b, "w2", at(15), lease=10) == [item]
    late = blocked(a, watch, lambda: extend(a, item, "w1", at(15)))
    b.execute("COMMIT")
    assert late.result(DEADLINE) is False
    assert state(a, item) == ("processing", 1, "w2")
    until = scalar(a, "SELECT locked_until FROM daz_retry_queue WHERE id = %s", [item])
    assert until == at(25)


# --- requeue vs acquire --------------------------------------------------------------


def _dead_letter(conn: Conn) -> int:
    (item,) = enqueue(conn, p_max_retries=0)
    leased(conn, item)
    assert fail(conn, item, "w1", at(1))
    assert state(conn, item) == ("dead_letter", 0, None)
    return item


def test_requeue_is_invisible_to_acquire_until_it_commits(a: Conn, b: Conn) -> None:
    item = _dead_letter(a)
    a.execute("BEGIN")
    assert requeue(a, [item], at(5)) == 1
    assert acquire(b, "w2", at(5)) == []  # not committed yet, and b did not wait
    a.execute("COMMIT")
    assert acquire(b, "w2", at(5)) == [item]
    assert state(a, item) == ("processing", 0, "w2")


def test_requeue_of_a_leased_item_does_nothing(a: Conn, b: Conn) -> None:
    # requeue only takes dead letters: an item a worker holds stays its own
    (item,) = enqueue(a)
    b.execute("BEGIN")
    assert acquire(b, "w2", T0) == [item]
    assert requeue(a, [item], at(1)) == 0
    b.execute("COMMIT")
    assert state(a, item) == ("processing", 0, "w2")


# --- cleanup vs acquire, cleanup vs requeue, complete vs cleanup -------------------------


def test_cleanup_and_acquire_do_not_wait_for_each_other(a: Conn, b: Conn) -> None:
    done, waiting = enqueue(a, 2)
    leased(a, done)
    assert complete(a, done, "w1", at(1))
    a.execute("BEGIN")
    assert cleanup(a, at(100)) == (1, 0)
    assert acquire(b, "w2", at(100)) == [waiting]
    a.execute("COMMIT")
    b.execute("BEGIN")
    assert acquire(b, "w3", at(105)) == []  # w2's lease runs to T0+110
    assert cleanup(a, at(105)) == (0, 0)  # leased rows are never cleanup's business
    b.execute("COMMIT")
    assert state(a, done) is None
    assert state(a, waiting) == ("processing", 0, "w2")


def test_cleanup_skips_a_dead_letter_being_requeued(a: Conn, b: Conn) -> None:
    item = _dead_letter(a)
    a.execute("BEGIN")
    assert requeue(a, [item], at(100)) == 1
    assert cleanup(b, at(100)) == (0, 0)  # skipped, not waited for
    a.execute("COMMIT")
    assert state(a, item) == ("pending", 0, None)
    assert scalar(a, "SELECT count(*) FROM daz_retry_queue_archive") == 0


def test_requeue_skips_a_dead_letter_being_cleaned_up(a: Conn, b: Conn) -> None:
    """Finished rows are never waited for (lock order): the requeue leaves the row to
    the cleanup that holds it."""
    item = _dead_letter(a)
    a.execute("BEGIN")
    assert cleanup(a, at(100)) == (1, 1)
    assert requeue(b, [item], at(100)) == 0  # under lock_timeout: it did not wait
    a.execute("COMMIT")
    assert state(a, item) is None
    assert scalar(a, "SELECT array_agg(id) FROM daz_retry_queue_archive") == [item]


def test_complete_vs_cleanup_uncommitted_completion_is_not_removed(a: Conn, b: Conn) -> None:
    (item,) = enqueue(a)
    leased(a, item)
    a.execute("BEGIN")
    assert complete(a, item, "w1", at(1))
    assert cleanup(b, at(100)) == (0, 0)  # the completion is not visible yet
    assert state(b, item) == ("processing", 0, "w1")
    a.execute("COMMIT")
    assert cleanup(b, at(100)) == (1, 0)
    assert state(b, item) is None


# --- no deadlock between calls (issue 12, item 5) ------------------------------------
#
# Each side runs with a lock_timeout of three deadlines here, so that within the test
# a wait lasts until the other side commits or the server's deadlock detector
# (deadlock_timeout, 1 s) breaks a cycle with 40P01. Not 0: a function that waits
# where it must not (scripts/mutation-check's acquire_waits) would leave the waiting
# thread blocked for ever and the teardown, which closes its connection, with it.
# `settle` returns once a side is done or waiting on a lock.


def _wait_for_the_other_side(*conns: Conn) -> None:
    for c in conns:
        c.execute(f"SET lock_timeout = '{3 * DEADLINE:.0f}s'")


def _start(conn: Conn, fn: Callable[[], R]) -> concurrent.futures.Future[R]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(fn)
    pool.shutdown(wait=False)
    return fut


def _settle(conn: Conn, watch: Conn, fut: concurrent.futures.Future[Any]) -> None:
    pid = conn.info.backend_pid
    end = time.monotonic() + DEADLINE
    while not fut.done():
        row = watch.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()
        if row and row[0]:
            return
        assert time.monotonic() < end, "neither finished nor waiting"
        time.sleep(0.005)  # polling a condition with a deadline


def _two_leased(conn: Conn) -> tuple[int, int]:
    first, second = enqueue(conn, 2)
    assert acquire(conn, "wA", T0, batch=2, lease=10) == [first, second]
    return first, second


def test_two_failures_of_a_new_key_vs_a_takeover_do_not_deadlock(
    a: Conn, b: Conn, watch: Conn
) -> None:
    """The issue's example: A writes two failures of a key that never failed in one
    transaction; B's acquire takes over A's expired second item meanwhile. Before: B
    waited on A's uncommitted circuit row, A's second fail on B: 40P01."""
    _wait_for_the_other_side(a, b)
    first, second = _two_leased(a)
    a.execute("BEGIN")
    assert fail(a, first, "wA", at(20))  # inserts the key's circuit row
    b.execute("BEGIN")
    taken = _start(b, lambda: acquire(b, "wB", at(20)))
    _settle(b, watch, taken)
    late = _start(a, lambda: fail(a, second, "wA", at(20)))
    _settle(a, watch, late)
    assert taken.result(DEADLINE) == [second]  # B never waited for A
    b.execute("COMMIT")
    assert late.result(DEADLINE) is False  # A lost the lease to B
    a.execute("COMMIT")
    assert state(a, first) == ("pending", 1, None)
    assert state(a, second) == ("processing", 1, "wB")


def test_failure_then_completion_vs_a_takeover_do_not_deadlock(
    a: Conn, b: Conn, watch: Conn
) -> None:
    """The relative with complete: A fails its first item and completes its expired
    second in one transaction while B takes the second over."""
    _wait_for_the_other_side(a, b)
    first, second = _two_leased(a)
    a.execute("UPDATE _retryq_circuit_defaults SET failure_threshold = 5")
    a.execute("BEGIN")
    assert fail(a, first, "wA", at(20))
    b.execute("BEGIN")
    taken = _start(b, lambda: acquire(b, "wB", at(20)))
    _settle(b, watch, taken)
    late = _start(a, lambda: complete(a, second, "wA", at(20)))
    _settle(a, watch, late)
    assert taken.result(DEADLINE) == [second]
    b.execute("COMMIT")
    assert late.result(DEADLINE) is False
    a.execute("COMMIT")


def test_crossed_takeovers_in_two_transactions_do_not_deadlock(
    a: Conn, b: Conn, watch: Conn
) -> None:
    """Each side takes over the other's expired item, then writes the outcome of its
    own expired one, which the other now holds. Waiting for an item the caller lost to
    a takeover in a transaction that goes on would close the cycle."""
    _wait_for_the_other_side(a, b)
    (mine,) = enqueue(a)
    leased(a, mine, "wA", lease=10)
    (theirs,) = enqueue(a)
    leased(a, theirs, "wB", lease=10)
    a.execute("BEGIN")
    b.execute("BEGIN")
    assert acquire(a, "wA", at(20), batch=1) in ([mine], [theirs])
    got_a = scalar(a, "SELECT locked_by FROM daz_retry_queue WHERE id = %s", [theirs])
    if got_a != "wA":  # A took its own item back: swap the roles of the ids
        mine, theirs = theirs, mine
    got_b = _start(b, lambda: acquire(b, "wB", at(20), batch=1))
    _settle(b, watch, got_b)
    assert got_b.result(DEADLINE) == [mine]  # acquire never waits
    out_a = _start(a, lambda: fail(a, mine, "wA", at(20)))
    _settle(a, watch, out_a)
    out_b = _start(b, lambda: complete(b, theirs, "wB", at(20)))
    _settle(b, watch, out_b)
    for side, fut in ((a, out_a), (b, out_b)):
        assert fut.result(DEADLINE) is False  # each lost its own item to the other
        side.execute("COMMIT")


def test_circuit_operators_in_one_transaction_vs_a_worker_do_not_deadlock(
    a: Conn, b: Conn, watch: Conn
) -> None:
    """An operator opens two circuits in one transaction while a worker fails items of
    both keys in the other order in one transaction."""
    _wait_for_the_other_side(a, b)
    x = scalar(a, "SELECT id FROM enqueue_retry_item('x', '{}', p_now => %s)", [T0])
    y = scalar(a, "SELECT id FROM enqueue_retry_item('y', '{}', p_now => %s)", [T0])
    assert sorted(acquire(a, "wA", T0, batch=2)) == sorted([x, y])
    a.execute("BEGIN")
    assert fail(a, y, "wA", at(1))
    b.execute("BEGIN")
    b.execute("SELECT retry_circuit_open('x', p_now => %s)", [at(1)])
    opened = _start(b, lambda: b.execute("SELECT retry_circuit_open('y', p_now => %s)", [at(1)]))
    _settle(b, watch, opened)
    late = _start(a, lambda: fail(a, x, "wA", at(1)))
    _settle(a, watch, late)
    for side, fut in ((a, late), (b, opened)):
        try:
            fut.result(DEADLINE)
        except psycopg.errors.DeadlockDetected:
            raise
        except psycopg.Error as e:  # a refusal that names the busy circuit is fine
            assert e.sqlstate == "55P03", e
            side.execute("ROLLBACK")
            continue
        side.execute("COMMIT")


def _no_deadlock(*pairs: tuple[Conn, concurrent.futures.Future[Any]]) -> list[str]:
    """Each side's outcome, 'ok' or a 55P03 refusal's message; a 40P01 fails."""
    outcomes = []
    for side, fut in pairs:
        try:
            fut.result(DEADLINE)
        except psycopg.errors.DeadlockDetected:
            raise
        except psycopg.Error as e:
            assert e.sqlstate == "55P03", e
            side.execute("ROLLBACK")
            outcomes.append(str(e))
            continue
        side.execute("COMMIT")
        outcomes.append("ok")
    return outcomes


@pytest.mark.parametrize(
    "call",
    [
        "SELECT retry_queue_pause(%s)",
        "SELECT retry_queue_resume(%s)",
        "SELECT retry_rate_limit_set(%s, NULL, 2)",
        "SELECT retry_rate_limit_clear(%s, NULL)",
    ],
)
def test_operators_changing_two_keys_in_crossed_orders_do_not_deadlock(
    a: Conn, b: Conn, watch: Conn, call: str
) -> None:
    """Two operators pause (or resume, limit, clear) keys x and y in one transaction
    each, in opposite orders: the second call of each waited for the other's first
    (40P01 before). Now a call in a transaction that already holds a lock takes the
    key only when free, else refuses with 55P03 naming it."""
    _wait_for_the_other_side(a, b)
    for key in ("x", "y"):  # something to resume or clear
        a.execute("SELECT retry_queue_pause(%s)", [key])
        a.execute("SELECT retry_rate_limit_set(%s, NULL, 1)", [key])
    a.execute("BEGIN")
    a.execute(call, ["x"])
    b.execute("BEGIN")
    b.execute(call, ["y"])
    second_a = _start(a, lambda: a.execute(call, ["y"]))
    _settle(a, watch, second_a)
    second_b = _start(b, lambda: b.execute(call, ["x"]))
    _settle(b, watch, second_b)
    outcomes = _no_deadlock((a, second_a), (b, second_b))
    assert any("is held by another transaction" in o for o in outcomes), outcomes


def test_clearing_a_limit_whose_token_a_worker_leases_twice_does_not_deadlock(
    a: Conn, b: Conn, watch: Conn
) -> None:
    """A worker's transaction leases an item of a limited key, then (a period later)
    another: its second token stamp checks the key's limit row (the foreign key).
    An operator's clear in between took the limit row and waited for the token
    (40P01 before); it now waits for the tokens first, then removes the limit."""
    _wait_for_the_other_side(a, b)
    a.execute("SELECT retry_rate_limit_set('x', NULL, 1, 1)")
    for _ in range(2):
        a.execute("SELECT enqueue_retry_item('x', '{}', p_now => %s)", [T0])
    a.execute("BEGIN")
    assert len(acquire(a, "wA", at(10), batch=1)) == 1
    cleared = _start(b, lambda: b.execute("SELECT retry_rate_limit_clear('x', NULL)"))
    _settle(b, watch, cleared)
    again = _start(a, lambda: acquire(a, "wA", at(12), batch=1))
    _settle(a, watch, again)
    assert _no_deadlock((a, again)) == ["ok"]
    assert len(again.result(DEADLINE)) == 1
    cleared.result(DEADLINE)  # autocommit: done once the worker committed
    assert scalar(watch, "SELECT count(*) FROM _retryq_rate_limit") == 0


def test_pausing_every_plugin_and_the_no_plugin_items_are_two_keys(a: Conn, b: Conn) -> None:
    """A pause's key keeps NULL (every plugin) apart from '' (the items without a
    plugin): two operators pausing each in its own transaction neither wait nor
    refuse (a 1 s lock_timeout fails a wait)."""
    a.execute("BEGIN")
    assert scalar(a, "SELECT retry_queue_pause('x', NULL)") is True
    b.execute("BEGIN")
    assert scalar(b, "SELECT retry_queue_pause('x', '')") is True
    assert scalar(b, "SELECT retry_queue_resume('x', '')") is True
    a.execute("COMMIT")
    b.execute("COMMIT")
