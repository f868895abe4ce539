"""Maintenance: the scheduled cleanup, in bounded slices, in a thread of its own.

Off the leasing path: a lane never waits for it, so a long cleanup (or one
that a statement_timeout keeps cancelling) can never starve leasing. Every
cleanup_interval it deletes finished items `slice` rows per statement
(cleanup_retry_queue's max_rows, under the lock that makes workers sharing
a queue take turns) until a slice comes back short. A slice cancelled by a
statement_timeout (57014) is halved for the next try; a role that may not
run cleanup (42501) or whose settings it refuses (22023: retention_days)
turns it off with a warning; other errors are logged
with their SQLSTATE and retried at the next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import psycopg

from retryq_py._sql import CleanupResult
from retryq_py.errors import ARGUMENT_STATES, explain
from retryq_py.worker.events import DATABASE, database_error

log = logging.getLogger("retryq.worker")

SLICE = 1000  # rows per statement at first
MIN_SLICE = 10


class Cleaner(Protocol):
    def try_cleanup(self, retention_days: int = 7, **kwargs: Any) -> CleanupResult | None: ...


class Maintenance:
    def __init__(
        self,
        cleaner: Cleaner,
        *,
        worker_id: str,
        interval: float,
        retention_days: int,
        stopping: threading.Event,
    ) -> None:
        self._cleaner = cleaner
        self._worker_id = worker_id
        self._interval = interval
        self._retention_days = retention_days
        self._stopping = stopping
        self.slice = SLICE
        self._thread = threading.Thread(target=self.run, name="retryq-maintenance", daemon=True)

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def join(self, deadline: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout=max(deadline - time.monotonic(), 0.01))

    def run(self) -> None:
        while not self._stopping.is_set():
            if not self.clean():
                return
            self._stopping.wait(self._interval)

    def clean(self) -> bool:
        """One pass, slice after slice; False when this role may not clean."""
        deleted = archived = 0
        try:
            while not self._stopping.is_set():
                size = self.slice
                result = self._cleaner.try_cleanup(
                    self._retention_days, batch_size=size, max_rows=size
                )
                if result is None:  # another worker is cleaning
                    break
                deleted += result.deleted_count
                archived += result.archived_count
                if result.deleted_count < size:
                    break
        except psycopg.errors.InsufficientPrivilege:
            # A worker that runs as retryq_worker alone: cleanup is retryq_admin's
            # job, so the worker keeps working and leaves it to them.
            log.warning(
                "worker %s: no privilege to run cleanup_retry_queue; scheduled cleanup "
                "is off (run `retryq cleanup` as retryq_admin, or set cleanup_interval 0)",
                self._worker_id,
            )
            return False
        except DATABASE as exc:
            if (
                database_error(exc, "cleanup", own_arguments=True) == "configuration"
                and (exc.sqlstate if isinstance(exc, psycopg.Error) else None) in ARGUMENT_STATES
            ):
                # its arguments are the worker's settings (retention_days):
                # every pass would fail the same way
                log.error(
                    "worker %s: cleanup_retry_queue refuses this worker's settings (%s);"
                    " scheduled cleanup is off",
                    self._worker_id,
                    explain(exc),
                )
                return False
            if isinstance(exc, psycopg.errors.QueryCanceled) or (
                isinstance(exc, psycopg.OperationalError) and not exc.sqlstate
            ):  # a statement_timeout, or the statement deadline cut it
                self.slice = max(MIN_SLICE, self.slice // 2)
            log.warning(
                "worker %s: cleanup stopped after %d items (%s); next slice %d rows, in %.0fs",
                self._worker_id,
                deleted,
                explain(exc),
                self.slice,
                self._interval,
            )
        if deleted:
            log.info(
                "worker %s: cleanup deleted %d items (%d dead letters archived)",
                self._worker_id,
                deleted,
                archived,
            )
        return True
