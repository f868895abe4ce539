"""The heartbeat: extends the leases of held items before they run out.

Every sixth of lock_timeout it extends, in one round trip, each item
leased or extended a third of a lease ago or more, so a slow handler keeps
its item; a handler past handler_timeout is left out, so its lease runs out
and another worker takes the item over. A renewal is due at most half a
lease into the lease, and its statement gets a deadline of an eighth of a
lease (see `Heartbeat.run`): a renewal lost to a broken or silent connection
is tried again, twice if need be, before the lease runs out. A
configuration error (see retryq_py.errors.server_error_kind) stops the worker.
While an acquire's reply is in doubt (lost, not yet taken up by a lane), it
also renews, under the same deadline, the leases the queue says the worker
holds and it does not know: the take-up may come late (its own statements
cut), and those leases must not run out under a live worker meanwhile.

While every handler slot holds a handler past handler_timeout, the items
waiting behind them could not start for as long: they are released (no
attempt spent) for another worker to run, and the lanes lease no more
until a handler ends (Ledger.take_stranded, Ledger.room).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from retryq_py._sql import RetryQueueItem
from retryq_py.errors import explain
from retryq_py.worker.events import DATABASE, database_error
from retryq_py.worker.ledger import Ledger

log = logging.getLogger("retryq.worker")

# (item ids, worker id, lease seconds, each id's lease grant time) -> ids kept
ExtendLocks = Callable[[Iterable[int], str, float, Iterable[datetime | None]], set[int]]
# gives leases back (release_retry_items), then forgets and counts them: Shutdown.release
Release = Callable[[list[RetryQueueItem]], None]


class Heartbeat:
    def __init__(
        self,
        ledger: Ledger,
        extend_locks: ExtendLocks,
        *,
        worker_id: str,
        lock_timeout: float,
        handler_timeout: float | None,
        done: threading.Event,
        fail: Callable[[BaseException], None] | None = None,
        renew_unknown: Callable[[], int | None] | None = None,
        release: Release | None = None,
    ) -> None:
        self._ledger = ledger
        self._release = release
        self._extend_locks = extend_locks
        self._worker_id = worker_id
        self._lock_timeout = lock_timeout
        self._handler_timeout = handler_timeout
        self._done = done
        self._fail = fail
        self._renew_unknown = renew_unknown
        self._failed = False
        self._thread = threading.Thread(target=self.run, name="retryq-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, deadline: float) -> None:
        self._thread.join(timeout=max(deadline - time.monotonic(), 0.01))

    def run(self) -> None:
        period = max(self._lock_timeout / 6, 0.05)
        # a tick short enough to renew soon the leases a lost acquire granted
        # (noticed by a lane at any time), and to try a failed round again
        tick = min(period, 0.2)
        next_beat = time.monotonic() + period
        next_unknown = 0.0
        try:
            while not self._done.wait(tick):
                now = time.monotonic()
                if self._renew_unknown is not None and now >= next_unknown:
                    next_unknown = now + self._renew_unknown_round(tick, period)
                if now < next_beat:
                    continue
                self._failed = False
                try:
                    self.beat(now)
                except Exception as exc:
                    # not the database's (a bug, a part of the caller's):
                    # contained, and tried again as after a lost connection.
                    # Leases that run out meanwhile are not counted on: an
                    # item not started by then is not run (Ledger.begin)
                    self._failed = True
                    log.error(
                        "worker %s: heartbeat failed (%s); leases not renewed this round"
                        " are given up if they run out before a renewal succeeds",
                        self._worker_id,
                        explain(exc),
                        exc_info=True,
                    )
                # a failed round (a connection lost) is tried again soon, not a
                # sixth of a lease later: two misses in a row could cost a lease
                next_beat = time.monotonic() + (tick if self._failed else period)
        except BaseException as exc:
            # the thread ends (an interrupt, not an error of a round): a
            # worker leasing on without renewals would count on leases that
            # run out under it, so it stops, and gives back what it holds
            log.error(
                "worker %s: the heartbeat stopped (%s); no lease can be renewed:"
                " stopping the worker",
                self._worker_id,
                explain(exc),
            )
            if self._fail:
                self._fail(exc)

    def _renew_unknown_round(self, tick: float, period: float) -> float:
        """Renews the leases lost acquires granted (see
        Flusher.renew_unknown); returns the seconds until the next look: a
        tick when no acquire is in doubt or the renewal failed, a period
        after a renewal."""
        assert self._renew_unknown is not None
        try:
            renewed = self._renew_unknown()
        except DATABASE as exc:
            if database_error(exc, own_arguments=True) == "configuration" and self._fail:
                self._fail(exc)
                return period
            log.warning(
                "worker %s: renewing the leases of an acquire in doubt failed (%s)",
                self._worker_id,
                explain(exc),
            )
            return tick
        except Exception as exc:
            log.error(
                "worker %s: renewing the leases of an acquire in doubt failed (%s)",
                self._worker_id,
                explain(exc),
                exc_info=True,
            )
            return tick
        if renewed is None:
            return tick
        if renewed:
            log.warning(
                "worker %s: renewed %d leases an acquire in doubt granted, until they are taken up",
                self._worker_id,
                renewed,
            )
        return period

    def beat(self, now: float) -> set[int]:
        """One round: returns the held items whose lease turned out lost."""
        if self._release is not None:
            self.release_stranded(now)
        due = self._ledger.due_for_extension(now, self._lock_timeout / 3, self._handler_timeout)
        if not due:
            return set()
        try:
            # by id, the order a flush writes in: a renewal and a flush of
            # this worker never wait on each other in a circle
            ids = sorted(due)
            # each renewal fenced to the held lease: an older lease's id
            # must not renew a newer lease of the item
            kept = self._extend_locks(
                ids, self._worker_id, self._lock_timeout, [due[i] for i in ids]
            )
        except DATABASE as exc:
            self._failed = True
            # its arguments (ids, worker_id, lock_timeout) are the worker's own:
            # a refusal, a privilege or a missing function fails every renewal,
            # and the leases would run out under a worker that goes on leasing
            if database_error(exc, own_arguments=True) == "configuration" and self._fail:
                self._fail(exc)
                return set()
            log.warning("worker %s: heartbeat failed (%s)", self._worker_id, explain(exc))
            return set()
        lost = self._ledger.extended(due, kept, now)
        if lost:
            log.warning(
                "worker %s: lost the lease of %d items: %s",
                self._worker_id,
                len(lost),
                sorted(lost),
            )
        return lost

    def release_stranded(self, now: float) -> None:
        """Release the items waiting behind handlers that all ran past
        handler_timeout (see Ledger.take_stranded); put back if that fails
        (their leases are not renewed meanwhile: they run out)."""
        assert self._release is not None
        stranded = self._ledger.take_stranded(now)
        if not stranded:
            return
        try:
            self._release(stranded)
        except DATABASE as exc:
            self._ledger.put_back(stranded)
            self._failed = True
            if database_error(exc, own_arguments=True) == "configuration" and self._fail:
                self._fail(exc)
                return
            log.warning(
                "worker %s: could not release %d items waiting behind stuck handlers (%s)",
                self._worker_id,
                len(stranded),
                explain(exc),
            )
            return
        log.warning(
            "worker %s: every handler has run past handler_timeout (%gs): released %d items"
            " waiting behind them for another worker (no attempt spent): %s; leasing none"
            " until a handler ends",
            self._worker_id,
            self._handler_timeout,
            len(stranded),
            sorted(i.id for i in stranded),
        )
