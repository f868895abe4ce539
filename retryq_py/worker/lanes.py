"""Lease lanes: the control loops that write outcomes and lease the next items.

Each lane flushes on a pooled connection of its own, so with two lanes one
transaction is in flight while the other's items run, and a round trip no
longer gates every batch. Lane 0 runs in the thread that calls run(). A lane
with nothing to do sleeps until a NOTIFY, the next due retry or
poll_interval, whichever comes first. (Cleanup is not theirs: see
maintenance.py.)

An error of a lane's statement is classified by SQLSTATE
(retryq_py.errors.server_error_kind): a transient one (a lost connection,
statement_timeout, idle_in_transaction_session_timeout, a full disk, a
standby) is logged with its SQLSTATE and message, counted, and waited out
with a doubling backoff; a configuration error (a privilege, a missing
function, a pooler that loses prepared statements, an argument refused
by 22023, 22003 or 22P02: a setting of the worker's own) stops run().
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Literal, Protocol

from retryq_py._sql import Due
from retryq_py.errors import explain
from retryq_py.worker.control import Stop, Wake
from retryq_py.worker.events import DATABASE, database_error, unavailable_or_error
from retryq_py.worker.flush import Flusher, lost_reply
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.settings import Settings

log = logging.getLogger("retryq.worker")

# When run() returns by itself: "idle" once nothing is due now and this
# worker holds nothing (an item or retry scheduled later stays for the next
# run); "drained" once nothing is pending or processing at all.
ExitWhen = Literal["idle", "drained"]


def nothing_left(exit_when: ExitWhen, due: Due) -> bool:
    """Whether the queue, as `due` saw it, lets a worker with exit_when stop
    (what it holds itself is the ledger's to say)."""
    if exit_when == "drained":
        return not due.active
    return not due.due_now


class Schedule(Protocol):
    """What the lanes ask the queue besides the flush (RetryQueue has it)."""

    def due(
        self,
        *,
        event_types: Sequence[str] | None = None,
        plugin_names: Sequence[str] | None = None,
    ) -> Due: ...


class Lanes:
    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger,
        flusher: Flusher,
        schedule: Schedule,
        stop: Stop,
        wake: Wake,
    ) -> None:
        self._s = settings
        self._ledger = ledger
        self._flusher = flusher
        self._schedule = schedule
        self._stop = stop
        self._wake = wake
        # exit_when: whether the queue still held pending or processing items
        # when the lanes stopped by themselves
        self.left_active = False
        # exit_when: the lane that saw nothing left first reports it (once,
        # whatever the number of lanes)
        self._exit_lock = threading.Lock()
        self._exit_reported = False

    def run(self, exit_when: ExitWhen | None) -> None:
        """Lane 0 in this thread, the others in their own, until a stop or
        (exit_when) nothing is left. An error that stops a lane stops them
        all and is raised here."""
        errors: list[BaseException] = []

        def lane_thread(lane: int) -> None:
            try:
                self._lane(lane, exit_when)
            except BaseException as exc:
                errors.append(exc)
                self._stop.halt()

        others = [
            threading.Thread(target=lane_thread, args=(n,), name=f"retryq-lane-{n}", daemon=True)
            for n in range(1, self._s.lanes)
        ]
        for thread in others:
            thread.start()
        try:
            self._lane(0, exit_when)
        except BaseException:
            self._stop.halt()
            raise
        finally:
            for thread in others:
                thread.join()
        if errors:
            raise errors[0]

    def _lane(self, lane: int, exit_when: ExitWhen | None) -> None:
        s, ledger, flusher = self._s, self._ledger, self._flusher
        stopping = self._stop.stopping
        backoff = 0.0
        more = True  # there may be due items: acquire without waiting
        next_poll = time.monotonic()
        while not stopping.is_set() and not ledger.idle_exit:
            self._wake.clear(lane)
            try:
                free, notified = ledger.room()
                if notified or (free > 0 and time.monotonic() >= next_poll):
                    more = True
                wait = s.poll_interval
                if not (more and free > 0):
                    if flusher.flush(force=False)[0]:
                        more = True  # a failure due at once, or freed capacity
                        continue
                else:
                    # write what is done and lease more in one transaction
                    _, got, asked = flusher.flush(force=True, acquire=min(s.batch_size, free))
                    more = got == asked
                    if more:
                        backoff = 0.0
                        continue
                    # Nothing more is due now: sleep until the next due item
                    # (by the server's clock), a NOTIFY or the poll interval.
                    due = self._schedule.due(**s.routing.params)
                    if (
                        exit_when is not None
                        and nothing_left(exit_when, due)
                        and self._finish_if_idle()
                    ):
                        # asked again: another lane may have written the last
                        # outcome between that answer and the ledger going idle
                        # (a "left active" then made run() warn for nothing)
                        if due.active:
                            due = self._schedule.due(**s.routing.params)
                        self.left_active = due.active
                        with self._exit_lock:
                            first, self._exit_reported = not self._exit_reported, True
                        if first:
                            self._stop.halt()  # before the line: nothing starts after it
                            log.info(
                                "worker %s: %s, stopping",
                                s.worker_id,
                                "nothing due and nothing held"
                                if exit_when == "idle"
                                else "nothing pending or processing",
                            )
                        return
                    # (an item a spent rate limit holds back is due when its
                    # key's token frees, so this sleeps until then; the 10 ms
                    # floor is for what acquire missed by a race, as an item
                    # or token another worker took in between)
                    if due.seconds_until_due is not None:
                        wait = min(wait, max(due.seconds_until_due, 0.01))
                    if exit_when is not None:
                        # items leased to other workers finish unannounced
                        wait = min(wait, 1.0)
                    next_poll = time.monotonic() + wait
                if free > 0:
                    wait = min(wait, max(next_poll - time.monotonic(), 0.0))
                wait = min(wait, ledger.ack_deadline(s.ack_interval) - time.monotonic())
                backoff = 0.0
                self._wake.wait(lane, wait)
            except DATABASE as exc:
                # every argument of a lane's statements (acquire, due, complete)
                # is the worker's own: a refused one is its configuration (the
                # items' values are the flush's to handle, see FlushWriter)
                if database_error(exc, own_arguments=True) == "configuration":
                    raise
                if lost_reply(exc):
                    flusher.recover()
                backoff = min(max(backoff * 2, 0.1), s.max_backoff)
                log.warning(
                    "worker %s: %s (%s); retrying in %.1fs",
                    s.worker_id,
                    unavailable_or_error(exc),
                    explain(exc),
                    backoff,
                )
                more = True
                stopping.wait(backoff)

    def _finish_if_idle(self) -> bool:
        """exit_when: end every lane if nothing is held or being leased."""
        if not self._ledger.finish_if_idle():
            return False
        self._wake.set()
        return True
