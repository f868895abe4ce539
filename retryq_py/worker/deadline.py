"""The statement deadline: a worker notices a silent network.

A server or a pooler that stops answering without closing the connection
(a blackhole, a frozen host, a stalled pooler) would block a thread of the
worker in its read for as long as the kernel keeps the socket, with no log
line. TCP keepalives and tcp_user_timeout (see `network_kwargs`) catch a
dead peer; what they cannot catch (the peer's kernel still answers) this
does: every connection the worker's own pool lends out is watched, and one
held longer than the deadline has its socket shut down, so the statement
waiting on it fails at once with a lost connection, which the worker logs
and backs off from like any other. Each of the worker's statements is one
short transaction, so a deadline far inside the lease is generous.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

log = logging.getLogger("retryq.worker")


def network_kwargs(conninfo: str, lock_timeout: float, connect_timeout: float) -> dict[str, Any]:
    """libpq's client-side timeouts, unless the conninfo sets them: a dead
    peer is noticed within a quarter of the lease (keepalive probes after
    that much idle time, a second apart; unacknowledged data given up after
    that long), a connection attempt within connect_timeout."""
    given = conninfo_to_dict(conninfo)
    quarter = max(1, round(lock_timeout / 4))
    wanted: dict[str, Any] = {
        "connect_timeout": max(1, round(connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": quarter,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": quarter * 1000,  # milliseconds
    }
    return {k: v for k, v in wanted.items() if k not in given}


class Watchdog:
    """One thread that shuts down the socket of a connection lent out for
    longer than `seconds`."""

    def __init__(self, seconds: float, worker_id: str) -> None:
        self.seconds = seconds
        self._worker_id = worker_id
        self._lock = threading.Lock()
        self._lent: dict[int, tuple[psycopg.Connection[Any], float, float]] = {}
        self._local = threading.local()  # a thread's own, shorter deadline
        self._cut = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def cut(self) -> int:
        """How many connections it has cut."""
        return self._cut

    @contextmanager
    def shorter(self, seconds: float) -> Iterator[None]:
        """Connections this thread borrows meanwhile get `seconds` at most
        (the heartbeat: a renewal stuck for half a lease, then tried again,
        comes after the lease ran out)."""
        was = getattr(self._local, "seconds", None)
        self._local.seconds = seconds
        try:
            yield
        finally:
            self._local.seconds = was

    @contextmanager
    def watch(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        self.lend(conn)
        try:
            yield
        finally:
            self.returned(conn)

    def lend(self, conn: psycopg.Connection[Any]) -> None:
        """Watch `conn` from now until `returned`."""
        seconds = min(self.seconds, getattr(self._local, "seconds", None) or self.seconds)
        with self._lock:
            self._lent[id(conn)] = (conn, time.monotonic() + seconds, seconds)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="retryq-deadline", daemon=True
                )
                self._thread.start()

    def returned(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._lent.pop(id(conn), None)

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        # fine enough for a thread's shorter deadline too (see `shorter`)
        period = min(max(self.seconds / 40, 0.02), 0.25)
        while not self._stopped.wait(period):
            now = time.monotonic()
            with self._lock:
                late = [(c, seconds) for c, at, seconds in self._lent.values() if at <= now]
                for conn, _ in late:
                    self._lent.pop(id(conn), None)
            for conn, seconds in late:
                self._cut_off(conn, seconds)

    def _cut_off(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        log.warning(
            "worker %s: the database gave no answer within %.1fs (a silent network?);"
            " closing that connection",
            self._worker_id,
            seconds,
        )
        self._cut += 1
        try:
            fd = conn.fileno()
            # a second socket object on the same socket: shutdown acts on the
            # socket, so the read blocked on it returns at once
            sock = socket.socket(fileno=socket.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()
        except (OSError, psycopg.Error):
            pass  # closed meanwhile


class WatchedPool(ConnectionPool[Any]):
    """The worker's own pool: every connection it lends is watched."""

    def __init__(self, *args: Any, watchdog: Watchdog, **kwargs: Any) -> None:
        self.watchdog = watchdog
        super().__init__(*args, **kwargs)

    # watched from getconn to putconn: connection() calls them (overriding
    # connection() too wrapped it in two more generator context managers,
    # per flush about as much as writing the flush's statement)
    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = super().getconn(timeout)
        self.watchdog.lend(conn)
        return conn

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        self.watchdog.returned(conn)
        super().putconn(conn)

    def check_connection(self, conn: psycopg.Connection[Any]) -> None:  # type: ignore[override]
        """The pool's check of an idle connection (`check()`, after a lost
        connection), watched too, with a second at most: unwatched, a check
        on a connection gone silent blocked the lane that asked for it for
        good (seen in the crash test, through a proxy that dropped it)."""
        with self.watchdog.shorter(min(self.watchdog.seconds, 1.0)), self.watchdog.watch(conn):
            ConnectionPool.check_connection(conn)

    def close(self, timeout: float = 5.0) -> None:
        self.watchdog.stop()
        super().close(timeout)
