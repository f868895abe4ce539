"""The stop: release what has not started, give in-flight handlers the grace period.

Released items are due at once for another worker and spend no retry;
handlers still running after grace_period (or at once, when forced) are
released too, and their results dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from retryq_py._sql import RetryQueueItem
from retryq_py.errors import explain
from retryq_py.worker.control import Stop, Wake
from retryq_py.worker.events import DATABASE, WorkerEvent, database_error
from retryq_py.worker.flush import Flusher
from retryq_py.worker.ledger import Ledger

log = logging.getLogger("retryq.worker")

# (item ids, worker id, each id's lease grant time or None: no fence) -> count
Release = Callable[[Iterable[int], str, Iterable[datetime] | None], int]


class Shutdown:
    def __init__(
        self,
        *,
        worker_id: str,
        grace_period: float,
        max_backoff: float,
        ledger: Ledger,
        flusher: Flusher,
        release: Release,
        stop: Stop,
        wake: Wake,
        emit: Callable[[list[WorkerEvent]], None],
    ) -> None:
        self._worker_id = worker_id
        self._grace_period = grace_period
        self._max_backoff = max_backoff
        self._ledger = ledger
        self._flusher = flusher
        self._release_ids = release
        self._stop = stop
        self._wake = wake
        self._emit = emit

    def run(self) -> None:
        deadline = time.monotonic() + self._grace_period
        backoff = 0.0
        ledger = self._ledger
        while True:
            self._wake.clear(0)
            try:
                unstarted = ledger.take_unstarted()
                try:
                    self.release(unstarted)
                except BaseException:
                    ledger.put_back_unstarted(unstarted)
                    raise
                self._flusher.flush(force=True)
                running, pending = ledger.busy()
                if not running and not pending:
                    return
                if self._stop.force.is_set() or time.monotonic() >= deadline:
                    break
                self._wake.wait(0, min(0.05, deadline - time.monotonic()))
                backoff = 0.0
            except DATABASE as exc:
                if database_error(exc, own_arguments=True) == "configuration":
                    raise
                if self._stop.force.is_set() or time.monotonic() >= deadline:
                    log.warning(
                        "worker %s: database unavailable at shutdown (%s); leases left to expire",
                        self._worker_id,
                        explain(exc),
                    )
                    return
                backoff = min(max(backoff * 2, 0.1), self._max_backoff)
                time.sleep(min(backoff, max(deadline - time.monotonic(), 0.0)))
        # Grace period over: hand the still-running items to other workers.
        late = ledger.take_late()
        log.warning(
            "worker %s: %d handlers still running after the grace period; releasing them",
            self._worker_id,
            len(late),
        )
        try:
            self.release(late)
        except DATABASE as exc:
            database_error(exc, own_arguments=True)
            log.warning("worker %s: could not release (%s)", self._worker_id, explain(exc))

    def release(self, items: list[RetryQueueItem]) -> None:
        """Give the leases back (no retry spent), then forget and count them."""
        if not items:
            return
        ids = [i.id for i in items]
        # fenced to the leases held: a release whose reply was lost, tried
        # again, must not give back a newer lease of the same item (the fence
        # needs every grant time; an item built by hand has none)
        leased_at = [i.leased_at for i in items if i.leased_at is not None]
        self._release_ids(ids, self._worker_id, leased_at if len(leased_at) == len(ids) else None)
        self._ledger.settle(items, {"released": len(ids)})
        self._emit([WorkerEvent("released", item) for item in items])
