"""Lease lanes: the control loops that write outcomes and lease the next items.

Each lane flushes on a pooled connection of its own, so with two lanes one
transaction is in flight while the other's items run, and a round trip no
longer gates every batch. Lane 0 runs in the thread that calls run() and
also runs the scheduled cleanup. A lane with nothing to do sleeps until a
NOTIFY, the next due retry or poll_interval, whichever comes first.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import psycopg

from retryq_py._sql import CleanupResult, Due
from retryq_py.worker.control import Stop, Wake
from retryq_py.worker.events import TRANSIENT, describe
from retryq_py.worker.flush import Flusher
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.settings import Settings

log = logging.getLogger("retryq.worker")


class Schedule(Protocol):
    """What the lanes ask the queue besides the flush (RetryQueue has both)."""

    def due(self) -> Due: ...

    def try_cleanup(self, retention_days: int = 7) -> CleanupResult | None: ...


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

    def run(self, exit_when_idle: bool) -> None:
        """Lane 0 in this thread, the others in their own, until a stop or
        (exit_when_idle) nothing is left. An error that stops a lane stops
        them all and is raised here."""
        errors: list[BaseException] = []

        def lane_thread(lane: int) -> None:
            try:
                self._lane(lane, exit_when_idle)
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
            self._lane(0, exit_when_idle)
        except BaseException:
            self._stop.halt()
            raise
        finally:
            for thread in others:
                thread.join()
        if errors:
            raise errors[0]

    def _lane(self, lane: int, exit_when_idle: bool) -> None:
        s, ledger, flusher = self._s, self._ledger, self._flusher
        stopping = self._stop.stopping
        backoff = 0.0
        more = True  # there may be due items: acquire without waiting
        cleans = lane == 0 and s.cleanup_interval > 0
        next_cleanup = time.monotonic() if cleans else float("inf")
        next_poll = time.monotonic()
        while not stopping.is_set() and not ledger.idle_exit:
            self._wake.clear(lane)
            try:
                if time.monotonic() >= next_cleanup:
                    again = self._cleanup()
                    next_cleanup = time.monotonic() + s.cleanup_interval if again else float("inf")
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
                    due = self._schedule.due()
                    if exit_when_idle and not due.active and self._finish_if_idle():
                        return
                    if due.seconds_until_due is not None:
                        wait = min(wait, max(due.seconds_until_due, 0.01))
                    if exit_when_idle:
                        # items leased to other workers finish unannounced
                        wait = min(wait, 1.0)
                    next_poll = time.monotonic() + wait
                if free > 0:
                    wait = min(wait, max(next_poll - time.monotonic(), 0.0))
                wait = min(wait, ledger.ack_deadline(s.ack_interval) - time.monotonic())
                backoff = 0.0
                self._wake.wait(lane, wait)
            except TRANSIENT as exc:
                backoff = min(max(backoff * 2, 0.1), s.max_backoff)
                log.warning(
                    "worker %s: database unavailable (%s); retrying in %.1fs",
                    s.worker_id,
                    describe(exc),
                    backoff,
                )
                more = True
                stopping.wait(backoff)

    def _finish_if_idle(self) -> bool:
        """exit_when_idle: end every lane if nothing is held or being leased."""
        if not self._ledger.finish_if_idle():
            return False
        self._wake.set()
        return True

    def _cleanup(self) -> bool:
        """Run the scheduled cleanup; False when this role may not (stop trying)."""
        s = self._s
        try:
            result = self._schedule.try_cleanup(s.retention_days)
        except psycopg.errors.InsufficientPrivilege:
            # A worker that runs as retryq_worker alone: cleanup is retryq_admin's
            # job, so the worker keeps working and leaves it to them.
            log.warning(
                "worker %s: no privilege to run cleanup_retry_queue; scheduled cleanup "
                "is off (run `retryq cleanup` as retryq_admin, or set cleanup_interval 0)",
                s.worker_id,
            )
            return False
        if result is not None and result.deleted_count:
            log.info(
                "worker %s: cleanup deleted %d items (%d dead letters archived)",
                s.worker_id,
                result.deleted_count,
                result.archived_count,
            )
        return True
