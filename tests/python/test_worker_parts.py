"""The worker's parts on their own: the ledger's contract (under concurrency
too), the settings, the flush writer and the heartbeat against a real
PostgreSQL, the stop and the signals.

The ledger and the control flags hold no I/O, so their tests need no
database; the parts that talk to it are tested against a real one.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from retryq_py import RetryConfig, RetryQueue, RetryQueueItem
from retryq_py.worker import Settings, WorkerCounts
from retryq_py.worker.control import Stop, Wake
from retryq_py.worker.events import EventKind, Outcome
from retryq_py.worker.flush import FlushWriter, Written, classify
from retryq_py.worker.heartbeat import Heartbeat
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.signals import stop_on_signals
from tests.helpers import statuses

Conn = psycopg.Connection[Any]
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def item(
    n: int, *, retry_count: int = 0, max_retries: int = 3, locked_until: datetime = EPOCH
) -> RetryQueueItem:
    return RetryQueueItem(
        id=n,
        event_id=uuid.uuid4(),
        event_type="e",
        channel_name="",
        plugin_name="",
        event_data={},
        retry_count=retry_count,
        max_retries=max_retries,
        priority=5,
        correlation_id="",
        event_metadata={},
        tags=[],
        created_at=EPOCH,
        next_retry_at=EPOCH,
        locked_until=locked_until,
        error_message=None,
        last_error_code=None,
    )


def ledger(batch_size: int = 4, capacity: int = 10) -> tuple[Ledger, threading.Event]:
    stopping = threading.Event()
    return Ledger(batch_size=batch_size, capacity=capacity, stopping=stopping), stopping


def run_one(book: Ledger, ok: bool = True) -> Outcome:
    """What a handler thread does with the next item."""
    taken = book.take()
    assert taken is not None and book.begin(taken)
    outcome = Outcome(taken, ok=ok, duration=0.0)
    book.finish(outcome)
    return outcome


# -- the ledger -------------------------------------------------------------------


def test_an_item_goes_from_hold_to_settle_and_is_counted_once() -> None:
    book, _ = ledger()
    outcomes, want = book.claim(force=True, acquire=2, ack_interval=0.1)
    assert (outcomes, want) == ([], 2)
    book.hold([item(1), item(2)], reserved=2)
    assert book.held == 2
    done = [run_one(book), run_one(book, ok=False)]
    claimed, _ = book.claim(force=True, acquire=0, ack_interval=0.1)
    assert claimed == done
    assert book.claim(force=True, acquire=0, ack_interval=0.1) == ([], 0)  # claimed once
    assert book.held == 2  # held until written
    book.settle([o.item for o in done], {"completed": 1, "failed": 1})
    assert book.held == 0
    assert book.counts == WorkerCounts(processed=1, failed=1)


def test_items_waiting_behind_handlers_all_past_handler_timeout_are_stranded() -> None:
    """Red team finding 4, in the ledger: while every slot (worker_count)
    holds a handler past handler_timeout, the items no handler started are
    not renewed but taken for release, and an outcome waiting to be written
    is still renewed; once a handler ends, all is as before."""
    book = Ledger(batch_size=4, capacity=10, stopping=threading.Event(), slots=2, handler_timeout=5)
    book.hold([item(1), item(2), item(3), item(4), item(5)], reserved=0)
    run_one(book)  # 1: its outcome waits to be written
    a, b = book.take(), book.take()
    assert a is not None and b is not None and book.begin(a) and book.begin(b)  # 2, 3 run
    now = time.monotonic()
    assert book.take_stranded(now + 4) == []  # not past handler_timeout yet
    assert set(book.due_for_extension(now + 4, 0, 5)) == {1, 2, 3, 4, 5}
    assert set(book.due_for_extension(now + 6, 0, 5)) == {1}  # 2, 3 stuck; 4, 5 wait
    stranded = book.take_stranded(now + 6)
    assert [i.id for i in stranded] == [4, 5]
    assert book.take_stranded(now + 6) == []  # taken once
    book.put_back(stranded)  # their release failed: for the handlers again
    book.finish(Outcome(a, ok=True, duration=0.0))  # 2 ended: a slot is free
    assert set(book.due_for_extension(now + 6, 0, 5)) == {1, 2, 4, 5}
    assert book.take_stranded(now + 6) == []
    assert [book.take(), book.take()] == stranded


def test_a_worker_whose_handlers_are_all_stuck_leases_nothing() -> None:
    """An item leased then could not start: it would wait (see above)."""
    book = Ledger(batch_size=4, capacity=10, stopping=threading.Event(), slots=2, handler_timeout=0)
    book.hold([item(1), item(2)], reserved=0)
    a, b = book.take(), book.take()
    assert a is not None and b is not None and book.begin(a)
    assert book.room()[0] > 0 and book.claim(force=True, acquire=4, ack_interval=0.1)[1] == 4
    book.hold([], reserved=4)
    assert book.begin(b)  # both slots past handler_timeout (0 s)
    assert book.room()[0] == 0
    assert book.claim(force=True, acquire=4, ack_interval=0.1) == ([], 0)
    book.finish(Outcome(a, ok=True, duration=0.0))
    assert book.room()[0] > 0
    outcomes, want = book.claim(force=True, acquire=4, ack_interval=0.1)
    assert [o.item.id for o in outcomes] == [1] and want == 4


def test_a_new_lease_held_before_the_old_ones_outcome_is_settled_stays_held() -> None:
    """A failure due at once is leased again (by the same flush's acquire or
    another lane's) while its outcome is still being written: the old
    lease's settle forgot the new lease, which then ran unrenewed, and an
    adoption took it up a second time, so it ran twice (the crash test)."""
    later = EPOCH + timedelta(seconds=10)
    book, _ = ledger()
    book.hold([item(1)], reserved=0)
    failed = run_one(book, ok=False)
    assert book.claim(force=True, acquire=0, ack_interval=0.1)[0] == [failed]
    book.hold([item(1, retry_count=1, locked_until=later)], reserved=0)  # leased again
    book.settle([failed.item], {"failed": 1})  # the old lease's outcome written
    assert book.held == 1
    assert book.held_leases() == ([1], [later])  # the new lease, known to an adoption
    again = run_one(book)
    book.claim(force=True, acquire=0, ack_interval=0.1)
    book.settle([again.item], {"completed": 1})
    assert book.held == 0


def test_an_adoption_takes_up_a_newer_lease_of_a_held_item_only() -> None:
    later = EPOCH + timedelta(seconds=10)
    book, _ = ledger()
    old = item(1)
    book.hold([old], reserved=0)
    book.held_leases()
    # the queue shows the same lease (taken up already) and a newer one
    book.hold([item(1)], reserved=0, adopt=True)
    assert book.held == 1 and book.take() is old
    book.held_leases()
    book.hold([item(1, retry_count=1, locked_until=later)], reserved=0, adopt=True)
    newer = book.take()
    assert newer is not None and newer.locked_until == later
    assert not book.begin(old)  # the old copy, had it waited, does not run
    assert book.begin(newer)


def test_a_claimed_list_is_never_the_one_handlers_append_to() -> None:
    """A lease with nothing to write claims an empty list: an outcome that
    comes while it is in flight waits for the next claim, not in that list."""
    book, _ = ledger()
    book.hold([item(1)], reserved=0)
    claimed, _ = book.claim(force=True, acquire=3, ack_interval=0.1)
    done = run_one(book)
    assert claimed == []
    book.hold([], reserved=3)
    assert book.claim(force=True, acquire=0, ack_interval=0.1)[0] == [done]


def test_successes_wait_for_a_batch_or_ack_interval_and_failures_do_not() -> None:
    book, _ = ledger(batch_size=3)
    book.hold([item(n) for n in range(1, 7)], reserved=0)
    first = run_one(book)
    assert book.claim(force=False, acquire=0, ack_interval=60)[0] == []
    assert book.ack_deadline(60) == pytest.approx(first.done_at + 60)
    assert book.claim(force=False, acquire=0, ack_interval=0)[0] == [first]  # its time came
    assert book.ack_deadline(60) == float("inf")
    batch = [run_one(book) for _ in range(3)]
    assert book.claim(force=False, acquire=0, ack_interval=60)[0] == batch  # a full batch
    fine, failed = run_one(book), run_one(book, ok=False)
    assert book.claim(force=False, acquire=0, ack_interval=60)[0] == [fine, failed]


def test_finish_asks_a_lane_to_wake_for_failures_the_first_success_and_a_batch() -> None:
    book, stopping = ledger(batch_size=3)
    items = [item(n) for n in range(1, 7)]
    book.hold(items, reserved=0)

    def finish(ok: bool) -> bool:
        taken = book.take()
        assert taken is not None and book.begin(taken)
        return book.finish(Outcome(taken, ok=ok, duration=0.0))

    assert [finish(True), finish(True), finish(True)] == [True, False, True]
    assert finish(False)
    taken = book.take()
    assert taken is not None and book.begin(taken)
    stopping.set()
    assert book.finish(Outcome(taken, ok=True, duration=0.0))  # a stop writes at once


def test_room_is_capacity_less_held_and_leasing_plus_what_is_about_to_be_written() -> None:
    book, _ = ledger(batch_size=4, capacity=10)
    assert book.room() == (10, False)
    book.claim(force=True, acquire=4, ack_interval=0.1)
    assert book.room() == (6, False)
    book.hold([item(n) for n in range(1, 5)], reserved=4)
    assert book.room() == (6, False)
    book.hold([item(n) for n in range(5, 10)], reserved=0)
    # one slot left: less than half a batch, so not worth a lease yet
    assert book.room() == (0, False)
    run_one(book)
    run_one(book)
    assert book.room() == (3, False)  # two outcomes about to free their slots
    book.notify()
    assert book.room() == (3, True)
    assert book.room() == (3, False)  # told once


def test_after_a_stop_unstarted_items_come_back_and_late_results_are_dropped() -> None:
    book, stopping = ledger()
    book.hold([item(1), item(2), item(3)], reserved=0)
    running = book.take()
    assert running is not None and book.begin(running)
    stopping.set()
    refused = book.take()
    assert refused is not None and not book.begin(refused)
    assert sorted(i.id for i in book.take_unstarted()) == [2, 3]
    assert book.take_unstarted() == []
    assert book.busy() == (True, False)
    assert [i.id for i in book.take_late()] == [1]
    book.finish(Outcome(running, ok=True, duration=1.0))  # came too late
    assert book.busy() == (False, False)
    book.put_back_unstarted([refused])
    assert book.busy() == (False, True)


def test_finish_if_idle_only_when_nothing_is_held_and_then_leases_nothing() -> None:
    book, _ = ledger()
    book.hold([item(1)], reserved=0)
    assert not book.finish_if_idle()
    outcome = run_one(book)
    assert book.claim(force=True, acquire=0, ack_interval=0.1)[0] == [outcome]
    assert not book.finish_if_idle()  # written, not yet settled
    book.settle([outcome.item], {"completed": 1})
    assert book.finish_if_idle() and book.idle_exit
    assert book.claim(force=True, acquire=5, ack_interval=0.1) == ([], 0)


def test_due_for_extension_leaves_out_young_leases_and_handlers_past_their_time() -> None:
    book, _ = ledger()
    book.hold([item(1), item(2), item(3)], reserved=0)
    now = time.monotonic()
    assert book.due_for_extension(now, 100, None) == {}
    slow = book.take()
    assert slow is not None and book.begin(slow)
    later = now + 200
    assert sorted(book.due_for_extension(later, 100, None)) == [1, 2, 3]
    assert sorted(book.due_for_extension(later, 100, 150)) == [2, 3]  # 1 runs too long
    due = book.due_for_extension(later, 100, None)
    assert book.extended(due, kept={1, 2}, now=later) == {3}
    assert list(book.due_for_extension(later + 50, 100, None)) == [3]  # 1 and 2 renewed


def test_the_ledger_under_concurrency_hands_out_writes_and_counts_each_item_once() -> None:
    """Two lanes lease and write, four handler threads run: every item is
    run once, written once and counted once, and held never passes capacity."""
    total, batch, capacity = 3000, 8, 8 * 3 + 4
    book, _ = ledger(batch_size=batch, capacity=capacity)
    ids = iter(range(1, total + 1))
    ids_lock = threading.Lock()
    ran: list[int] = []
    written: list[int] = []
    most = [0]
    leased_all = threading.Event()

    def handler() -> None:
        while (taken := book.take()) is not None:
            assert book.begin(taken)
            ran.append(taken.id)
            book.finish(Outcome(taken, ok=taken.id % 7 != 0, duration=0.0))

    def lane() -> None:
        rng = random.Random(threading.get_ident())
        while not (leased_all.is_set() and book.held == 0):
            free, _ = book.room()
            time.sleep(rng.random() / 20_000)  # the lane's other work: another lane may lease
            outcomes, want = book.claim(
                force=rng.random() < 0.5, acquire=min(batch, free), ack_interval=0.001
            )
            with ids_lock:
                leased = [item(n) for _, n in zip(range(want), ids, strict=False)]
                if len(leased) < want:
                    leased_all.set()
            time.sleep(rng.random() / 10_000)  # the round trip
            ok = sum(o.ok for o in outcomes)
            written.extend(o.item.id for o in outcomes)
            tally: dict[EventKind, int] = {"completed": ok, "failed": len(outcomes) - ok}
            book.settle([o.item for o in outcomes], tally)  # as Flusher does: then hold
            book.hold(leased, want)
            most[0] = max(most[0], book.held)

    handlers = [threading.Thread(target=handler) for _ in range(4)]
    lanes = [threading.Thread(target=lane) for _ in range(2)]
    for thread in handlers + lanes:
        thread.start()
    for thread in lanes:
        thread.join(30)
    book.end_handlers(len(handlers))
    for thread in handlers:
        thread.join(5)
    assert not any(t.is_alive() for t in handlers + lanes)
    assert sorted(ran) == list(range(1, total + 1))
    assert sorted(written) == list(range(1, total + 1))
    failed = total // 7
    assert book.counts == WorkerCounts(processed=total - failed, failed=failed)
    assert most[0] <= capacity
    assert book.held == 0


# -- settings, stop, signals --------------------------------------------------------


def test_settings_resolve_defaults_and_checks() -> None:
    s = Settings.resolve(RetryConfig(lock_timeout=2), worker_count=3, batch_size=5)
    assert (s.lanes, s.ack_interval, s.capacity, s.lock_seconds) == (2, 0.1, 5 * 3 + 3, 2)
    assert Settings.resolve(None, lock_timeout=1.5).ack_interval == pytest.approx(0.1)
    assert Settings.resolve(None, lock_timeout=1.5).lock_seconds == 2  # rounded up
    assert Settings.resolve(None, lock_timeout=5, ack_interval=0.3).ack_interval == 0.3
    assert Settings.resolve(None, worker_count=8, pool_max_size=2).lanes == 1  # your pool
    assert Settings.resolve(None, worker_count=8, lanes=3, pool_max_size=2).lanes == 3
    for bad in ({"worker_count": 0}, {"lanes": 17}, {"poll_interval": 0}, {"lock_timeout": 0.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings.resolve(None, **bad)


def test_a_second_stop_request_forces() -> None:
    wake = Wake(2)
    stop = Stop(wake)
    stop.request()
    assert stop.stopping.is_set() and not stop.force.is_set()
    wake.wait(1, 0)  # set for every lane: returns at once
    stop.request()
    assert stop.force.is_set()
    other = Stop(Wake(1))
    other.halt()
    assert other.stopping.is_set() and not other.force.is_set()


def test_signals_call_stop_inside_the_block_and_are_restored_after() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    calls: list[int] = []
    with stop_on_signals(lambda: calls.append(1), "w"):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # Python runs the handler between bytecodes
    assert calls == [1, 1]
    assert {s: signal.getsignal(s) for s in before} == before


def test_classify_names_and_counts_each_written_outcome() -> None:
    last = item(5, retry_count=3, max_retries=3)
    outcomes = [
        Outcome(item(1), ok=True, duration=0.1),
        Outcome(item(2), ok=True, duration=0.1),
        Outcome(item(3), ok=False, duration=0.1, error="x"),
        Outcome(item(4), ok=False, duration=0.1, retryable=False),
        Outcome(last, ok=False, duration=0.1),
        Outcome(item(6), ok=False, duration=0.1),
    ]
    written = Written(lost={2}, failed_written=[True, True, True, False], leased=[])
    report = classify(outcomes, written)
    assert [(e.kind, e.item.id) for e in report.events] == [
        ("completed", 1),
        ("lease_lost", 2),
        ("failed", 3),
        ("dead_lettered", 4),
        ("dead_lettered", 5),
        ("lease_lost", 6),
    ]
    assert report.tally == {"completed": 1, "lease_lost": 2, "failed": 1, "dead_lettered": 2}
    assert report.by_type[("dead_lettered", "e")] == 2


# -- the parts that talk to PostgreSQL ------------------------------------------------


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


def test_the_flush_writer_writes_and_leases_in_one_transaction(db: Conn) -> None:
    q = RetryQueue(db)
    ids = [e.id for e in q.add_many([{"event_type": "e", "data": i} for i in range(5)])]
    writer = FlushWriter("w", None, 30)
    first = writer.write(db, [], 3)
    assert [i.id for i in first.leased] == ids[:3] and first.lost == set()
    a, b, c = first.leased
    # c's lease taken over by another worker, which completes it: this
    # worker's ack comes short
    db.execute(
        "UPDATE _retryq_active SET locked_by = 'w2', last_attempted_at = clock_timestamp()"
        " WHERE id = %s",
        [c.id],
    )
    assert q.complete(c.id, "w2")
    outcomes = [
        Outcome(a, ok=True, duration=0.0),
        Outcome(b, ok=False, duration=0.0, error="boom", code="E"),
        Outcome(c, ok=True, duration=0.0),
    ]
    second = writer.write(db, outcomes, 5)
    assert (second.lost, second.failed_written) == ({c.id}, [True])
    assert [i.id for i in second.leased] == ids[3:]
    assert db.autocommit  # given back as it was
    assert statuses(db) == {"completed": 2, "pending": 1, "processing": 2}


def test_a_success_an_earlier_write_of_its_own_completed_is_not_counted_lost(db: Conn) -> None:
    """A flush whose reply was lost can still run after the worker wrote its
    outcomes again (a pooler holding the statement, then sending it): the
    earlier write completes the items, the later one finds them gone. Those
    were completed under this worker's lease, so they count as written, not
    as lost leases; an item completed under another lease stays lost."""
    q = RetryQueue(db)
    q.add_many([{"event_type": "e", "data": i} for i in range(3)])
    writer = FlushWriter("w", None, 30)
    a, b, c = writer.write(db, [], 3).leased
    assert a.leased_at is not None
    # the late earlier write: the same worker, the same lease
    assert q.complete_many([a.id, b.id], "w", leased_at=[a.leased_at, b.leased_at]) == 2
    # c: expired and taken over by w2, then completed under w2's lease
    db.execute(
        "UPDATE _retryq_active SET locked_by = 'w2', last_attempted_at = clock_timestamp()"
        " WHERE id = %s",
        [c.id],
    )
    assert q.complete(c.id, "w2")
    written = writer.write(db, [Outcome(i, ok=True, duration=0.0) for i in (a, b, c)], 0)
    assert written.lost == {c.id}
    report = classify([Outcome(i, ok=True, duration=0.0) for i in (a, b, c)], written)
    assert report.tally == {"completed": 2, "lease_lost": 1}


def test_the_heartbeat_and_a_flush_lock_items_in_one_order(module_dsn: str, db: Conn) -> None:
    """The heartbeat renewed in the ledger's order while a flush of the same
    worker wrote its failures in the handlers' order: heartbeat B then A,
    flush A then B, and one of them ended with 40P01 (seen in the crash
    test's log). Both now go by item id."""
    q = RetryQueue(db)
    q.add_many([{"event_type": "e", "data": i} for i in range(2)])
    a, b = sorted(q.acquire("w", 2, 30), key=lambda it: it.id)
    book, _ = ledger()
    book.hold([b, a], reserved=0)  # held (and due) in the other order
    with psycopg.connect(module_dsn) as flush, psycopg.connect(module_dsn, autocommit=True) as hb:
        flush.execute("SET deadlock_timeout = '100ms'")
        fail = "SELECT fail_retry_item(%s, 'w', 'boom', 'E', true)"
        flush.execute(fail, [a.id])  # the flush's first failure: holds a
        beat = Heartbeat(
            book,
            RetryQueue(hb).extend_locks,
            worker_id="w",
            lock_timeout=30,
            handler_timeout=None,
            done=threading.Event(),
        )
        lost: list[set[int]] = []
        thread = threading.Thread(target=lambda: lost.append(beat.beat(time.monotonic() + 20)))
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        ).fetchone() != (1,):
            time.sleep(0.02)
        flush.execute(fail, [b.id])  # its second: waits on b if the heartbeat took b first
        flush.commit()
        thread.join(10)
    assert lost == [{a.id, b.id}]  # both failed by the flush: no longer leased


def test_a_flush_writes_outcomes_in_item_id_order(module_dsn: str, db: Conn) -> None:
    """The other half of one lock order: whatever order handlers finish in,
    the flush's writer gets the outcomes by item id."""
    from psycopg_pool import ConnectionPool

    from retryq_py.worker.flush import Flusher

    q = RetryQueue(db)
    q.add_many([{"event_type": "e", "data": i} for i in range(3)])
    items = sorted(q.acquire("w", 3, 30), key=lambda it: it.id)
    book, _ = ledger()
    book.hold(items, reserved=0)
    for _ in items:  # started, then finished last id first
        assert book.begin(book.take())  # type: ignore[arg-type]
    for it in reversed(items):
        book.finish(Outcome(it, ok=False, duration=0.0, error="boom", code="E"))
    seen: list[list[int]] = []

    class Spy:
        def write(self, conn: Conn, outcomes: list[Outcome], want: int) -> Written:
            seen.append([o.item.id for o in outcomes])
            return Written(set(), [True] * len(outcomes), [])

    with ConnectionPool(module_dsn, min_size=1, max_size=1, open=True) as pool:
        flusher = Flusher(
            worker_id="w", ack_interval=0.0, ledger=book, pool=pool, writer=Spy(), emit=print
        )
        flusher.flush(force=True)
    assert seen == [[it.id for it in items]]


def test_the_heartbeat_extends_due_leases_and_reports_lost_ones(db: Conn) -> None:
    q = RetryQueue(db)
    q.add_many([{"event_type": "e", "data": i} for i in range(2)])
    kept, lost = q.acquire("w", 2, 30)
    book, _ = ledger()
    book.hold([kept, lost], reserved=0)
    beat = Heartbeat(
        book,
        q.extend_locks,
        worker_id="w",
        lock_timeout=60,
        handler_timeout=None,
        done=threading.Event(),
    )
    assert beat.beat(time.monotonic()) == set()  # nothing due yet
    db.execute("UPDATE daz_retry_queue SET locked_by = 'thief' WHERE id = %s", [lost.id])
    assert beat.beat(time.monotonic() + 30) == {lost.id}
    until = db.execute("SELECT locked_until FROM daz_retry_queue WHERE id = %s", [kept.id])
    row = until.fetchone()
    assert row is not None and row[0] > kept.locked_until


def test_the_heartbeat_does_not_call_a_lease_lost_whose_outcome_is_being_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A renewal refused because the outcome's write ended the lease (a
    completion, a failure leased again by another worker) was logged as
    "lost the lease" of items nothing had gone wrong with; a running item
    whose renewal is refused is still lost."""
    book, _ = ledger()
    book.hold([item(1), item(2), item(3)], reserved=0)
    waiting, in_flight = run_one(book), run_one(book, ok=False)
    assert book.take() is not None  # item 3 runs on
    assert book.claim(force=True, acquire=0, ack_interval=0.1)[0] == [waiting, in_flight]
    book.unclaim([waiting], 0)  # 1's write failed: it waits again; 2's is in flight
    beat = Heartbeat(
        book,
        lambda ids, worker, lease, leased_at: set(),  # every renewal refused
        worker_id="w",
        lock_timeout=60,
        handler_timeout=None,
        done=threading.Event(),
    )
    with caplog.at_level("WARNING", logger="retryq.worker"):
        assert beat.beat(time.monotonic() + 30) == {3}
    assert "lost the lease of 1 items: [3]" in caplog.text
    book.settle([waiting.item, in_flight.item], {"completed": 1, "failed": 1})
    book.hold([item(1, locked_until=EPOCH + timedelta(seconds=5))], reserved=0)  # leased again
    assert beat.beat(time.monotonic() + 60) == {1, 3}  # the new lease has no outcome yet


def test_a_stop_does_not_hand_back_an_older_copy_of_a_running_item() -> None:
    """An item leased again while its older copy waited for a handler: the
    newer lease runs, the stop comes, and the older copy (taken by another
    thread, not yet begun) went back as unstarted, so the shutdown released
    the item by id: the running lease, which another worker then ran too."""
    book, stopping = ledger()
    book.hold([item(1)], reserved=0)
    book.hold([item(1, retry_count=1, locked_until=EPOCH + timedelta(seconds=10))], reserved=0)
    older, newer = book.take(), book.take()
    assert older is not None and newer is not None and book.begin(newer)
    stopping.set()
    assert not book.begin(older)
    assert book.take_unstarted() == []


def test_both_copies_of_an_item_taken_over_by_its_own_worker_finish() -> None:
    """An item's lease ran out while its handler ran and this worker's own
    acquire took it over: the newer copy runs too. The handlers were
    counted by item id, so the first copy to finish took the other's place
    and the second outcome was dropped as if released; when that was the
    newer lease's, it was never written and was renewed for ever."""
    book, _ = ledger()
    book.hold([item(1)], reserved=0)
    older = book.take()
    assert older is not None and book.begin(older)
    book.hold([item(1, retry_count=1, locked_until=EPOCH + timedelta(seconds=10))], reserved=0)
    newer = book.take()
    assert newer is not None and book.begin(newer)
    book.finish(Outcome(older, ok=False, duration=0.0))
    book.finish(Outcome(newer, ok=True, duration=0.0))
    claimed, _ = book.claim(force=True, acquire=0, ack_interval=0.1)
    assert [(o.item.retry_count, o.ok) for o in claimed] == [(0, False), (1, True)]
    assert book.replaced(claimed) == ([claimed[1]], [claimed[0]])  # the older one is not written
    assert book.busy() == (False, False)  # no handler left counted as running
