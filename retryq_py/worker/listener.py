"""The listener: LISTEN on the queue's channel, on a connection of its own.

A lost connection is retried with backoff; meanwhile the lanes' poll still
finds the work, only later.

A pooler in transaction mode (PgBouncer's pool_mode = transaction) hands the
LISTEN to whichever server connection runs it and never brings its
notifications back. So once listening, the listener sends itself a probe
NOTIFY from another connection: when the probe does not arrive within
PROBE_SECONDS, it says so and ends, and the lanes find work by polling
every poll_interval.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from retryq_py import _session as session
from retryq_py._sql.worker import listen
from retryq_py.errors import explain
from retryq_py.queue import RetryQueue
from retryq_py.worker.deadline import network_kwargs

log = logging.getLogger("retryq.worker")


def connect_args(
    database: str | ConnectionPool[Any], connect_timeout: float
) -> tuple[str, dict[str, Any]]:
    """How to open an autocommit connection like the pool's."""
    if isinstance(database, str):
        conninfo, kwargs = database, {}
    else:
        # psycopg_pool 3.3 allows callables for both (credentials that rotate)
        info, extra = database.conninfo, database.kwargs
        conninfo = info() if callable(info) else info
        kwargs = dict((extra() if callable(extra) else extra) or {})
    kwargs["autocommit"] = True
    kwargs["prepare_threshold"] = None  # a pooler in transaction mode loses them
    kwargs.update(session.OWN_KWARGS)  # a connection of its own: UTF8 (see _session)
    kwargs.setdefault("connect_timeout", max(1, round(connect_timeout)))
    return conninfo, kwargs


PROBE_SECONDS = 3.0


class Listener:
    """Calls `on_notify` once connected (for anything sent while it was
    away) and then for every NOTIFY, until `stopping` is set."""

    def __init__(
        self,
        database: str | ConnectionPool[Any],
        *,
        worker_id: str,
        schema: str | None,
        connect_timeout: float,
        max_backoff: float,
        lock_timeout: float = 300.0,
        stopping: threading.Event,
        on_notify: Callable[[], None],
    ) -> None:
        self._database = database
        self._worker_id = worker_id
        self._schema = schema
        self._connect_timeout = connect_timeout
        self._lock_timeout = lock_timeout
        self._max_backoff = max_backoff
        self._stopping = stopping
        self._on_notify = on_notify
        self._thread = threading.Thread(target=self.run, name="retryq-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, deadline: float) -> None:
        self._thread.join(timeout=max(deadline - time.monotonic(), 0.01))

    def run(self) -> None:
        conninfo, kwargs = connect_args(self._database, self._connect_timeout)
        # keepalives: an idle LISTEN connection on a dead network is noticed
        kwargs = {**network_kwargs(conninfo, self._lock_timeout, self._connect_timeout), **kwargs}
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(conninfo, **kwargs) as conn:
                    session.pin(conn)
                    channel = RetryQueue(conn, schema=self._schema).channel()
                    if self._stopping.is_set():
                        return
                    conn.execute(listen(channel))
                    backoff = 0.0
                    self._on_notify()  # anything sent while we were away
                    if not self._probe(conn, channel, conninfo, kwargs):
                        log.warning(
                            "worker %s: LISTEN does not work through this connection (a pooler"
                            " in transaction mode?): polling every poll_interval instead",
                            self._worker_id,
                        )
                        conn.execute("UNLISTEN *")
                        return
                    if self._stopping.is_set():
                        return  # stopped meanwhile: no "listening" after "stopping"
                    log.info("worker %s: listening on %s", self._worker_id, channel)
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._on_notify()
            except Exception as exc:  # the poll still works: keep trying
                if self._stopping.is_set():
                    return
                backoff = min(max(backoff * 2, 0.1), self._max_backoff)
                log.warning(
                    "worker %s: listener lost its connection (%s); retrying in %.1fs",
                    self._worker_id,
                    explain(exc),
                    backoff,
                )
                self._stopping.wait(backoff)

    def _probe(
        self, conn: psycopg.Connection[Any], channel: str, conninfo: str, kwargs: dict[str, Any]
    ) -> bool:
        """Whether a NOTIFY sent from another connection reaches this one."""
        payload = f"retryq-probe-{uuid.uuid4()}"
        with psycopg.connect(conninfo, **kwargs) as other:
            other.execute("SELECT pg_notify(%s, %s)", [channel, payload])
        deadline = time.monotonic() + PROBE_SECONDS
        arrived = False
        while not arrived and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # never leave the loop early: psycopg drops the rest of a batch
            # read in one go (a NOTIFY behind the probe), so the whole batch
            # is read, and stop_after ends the loop right after it
            for note in conn.notifies(timeout=min(left, 0.5), stop_after=1):
                if note.payload == payload:
                    arrived = True
                else:
                    self._on_notify()
        return True  # arrived, or stopping: no verdict needed
