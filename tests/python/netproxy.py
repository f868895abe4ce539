"""A TCP proxy in front of the test server that can go silent.

`freeze()` stops forwarding in both directions without closing anything (a
stalled pooler or a frozen host, as the client sees it: its data is taken,
no answer ever comes); `thaw()` resumes. `cut()` resets every connection
through it (a connection lost around a commit).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Iterator

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class Proxy:
    def __init__(self, server_dsn: str) -> None:
        params = conninfo_to_dict(server_dsn)
        host, port = str(params.get("host", "127.0.0.1")), int(params.get("port", 5432))
        self._target = (host, port)
        # a socket directory (the embedded server): forward to its Unix socket
        self._unix = os.path.join(host, f".s.PGSQL.{port}") if host.startswith("/") else None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._servers: set[socket.socket] = set()  # those of _socks facing the server
        self.dsn = make_conninfo(server_dsn, host="127.0.0.1", port=str(self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self) -> socket.socket:
        if self._unix is None:
            return socket.create_connection(self._target)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._unix)
        return sock

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def cut(self, *, now: bool = False) -> None:
        """Resets every open connection (RST, no FIN): new ones still work.
        A connection waiting for the server is reset when the answer comes
        (the answer is lost: a cut between a commit and its reply), since
        close() resets nothing while a pump thread is blocked in recv() on
        it; `now` wakes those threads first, so the client sees the reset at
        once, while the server may still be running its statement."""
        with self._lock:
            socks, self._socks = self._socks, []
            servers, self._servers = self._servers, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if now:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            elif s in servers:
                # wakes the pump reading the server (nothing is sent): it
                # ends, and the socket is reset. A server process that was
                # idle ends at once; one running a statement finishes it (a
                # COMMIT too) and loses its reply. Left blocked, the pump of
                # an idle connection kept its server process for good, and a
                # run's cuts used up the server's connections.
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RD)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closed = True
        self.thaw()
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = self._connect()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, server]
                self._servers.add(server)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self._flowing.wait()  # frozen: hold the data, answer nothing
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def proxy(server_dsn: str) -> Iterator[Proxy]:
    p = Proxy(server_dsn)
    try:
        yield p
    finally:
        p.close()
