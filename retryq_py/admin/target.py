"""Where a command works (`Target`), how it connects, and the errors a person
can act on, each carrying the process exit code the CLI ends with."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# psycopg and the queue load with the first command that connects: the CLI
# reads DATABASE_ENV, ExitCode and the errors for `--help` and `--version`.
if TYPE_CHECKING:
    import psycopg

    from retryq_py.queue import RetryQueue

DATABASE_ENV = "RETRYQ_DATABASE_URL"
# libpq waits forever on a silent host unless told otherwise.
DEFAULT_CONNECT_TIMEOUT = 5


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    UNREACHABLE = 3
    NOT_INSTALLED = 4
    INTERRUPTED = 130


class CommandError(Exception):
    """A failure with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageProblem(CommandError):
    exit_code = ExitCode.USAGE


class DatabaseUnreachable(CommandError):
    exit_code = ExitCode.UNREACHABLE


class NotInstalled(CommandError):
    exit_code = ExitCode.NOT_INSTALLED


class Declined(CommandError):
    """A confirmation answered no: nothing was changed. The CLI prints the
    message and exits 0, as `retryq cancel` does when declined."""

    exit_code = ExitCode.OK


class Interrupted(CommandError):
    """Stopped by Ctrl-C (SIGINT) after a clean shutdown; `counts` says what it did."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str = "interrupted", counts: Any = None) -> None:
        super().__init__(message)
        self.counts = counts


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def refusal(exc: BaseException) -> str:
    """first_line without the queue's own "retryq: " prefix: for a message
    that puts something before it ("line 3: ..."), since the CLI prefixes
    the whole line with "retryq: " once."""
    return first_line(exc).removeprefix("retryq: ")


# SQLSTATEs by which the queue refuses a value it was given (class 22 data
# exceptions, 23514 a CHECK, 54000 a size bound): the caller's input, not a
# fault of the server. The CLI exits 2 for them, the dashboard answers 400.
_REFUSED = ("22", "23514", "54000")


def is_refused_value(exc: BaseException) -> bool:
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.Error) and state.startswith(_REFUSED)


_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Target:
    """Where a command works: a libpq DSN and an optional schema."""

    dsn: str
    schema: str | None = None

    @property
    def conninfo(self) -> str:
        """The DSN with a connect timeout and, for a schema, a search_path option,
        so every connection (pools and worker processes included) finds the queue."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            params: dict[str, Any] = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError as exc:
            raise UsageProblem(f"invalid --database URL: {first_line(exc)}") from exc
        _check_ports(params)
        params.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        if self.schema is not None:
            options = str(params.get("options", "")).strip()
            params["options"] = f"{options} -c search_path={self.schema}".strip()
        return make_conninfo(**params)

    def describe(self) -> str:
        """host:port/dbname, without the password, for messages."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            return "the database"
        host = str(params.get("host") or "localhost")
        port = str(params.get("port") or "5432")
        where = f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"
        return where + (f" (schema {self.schema})" if self.schema else "")


def _check_ports(params: dict[str, Any]) -> None:
    """libpq only finds a bad port when it connects, and then it reads as an
    unreachable server: say at once that the URL is wrong."""
    for port in str(params.get("port") or "").split(","):
        if port.strip() and not (port.strip().isdigit() and 1 <= int(port) <= 65535):
            raise UsageProblem(f"invalid --database URL: port {port.strip()!r} is not 1-65535")


def target(database: str | None, schema: str | None = None) -> Target:
    """Check --database/RETRYQ_DATABASE_URL and --schema; raise UsageProblem if bad."""
    if not database or not database.strip():
        raise UsageProblem(f"no database given: pass --database URL or set {DATABASE_ENV}")
    if schema is not None and not _SCHEMA_RE.fullmatch(schema):
        raise UsageProblem(
            f"invalid --schema {schema!r}: use lower-case letters, digits and _ "
            "(at most 63, not starting with a digit)"
        )
    result = Target(database.strip(), schema)
    _ = result.conninfo  # validates the DSN syntax now
    return result


def open_connection(t: Target, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    import psycopg

    from retryq_py import _session as session
    from retryq_py._sql.timestamps import load_infinite_timestamps

    try:
        conn = psycopg.connect(t.conninfo, autocommit=autocommit, **session.OWN_KWARGS)
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(f"cannot connect to {t.describe()}: {first_line(exc)}") from exc
    # UTF8 and ISO whatever the role, the database or PG* variables say
    session.pin(conn)
    # one row with an infinite time must not break every command's reads
    load_infinite_timestamps(conn)
    return conn


def is_installed(conn: psycopg.Connection[Any]) -> bool:
    """True when the connection's search_path finds the retryq table and functions."""
    from retryq_py._sql import ops as _q

    row = conn.execute(_q.IS_INSTALLED).fetchone()
    return bool(row and row[0])


def schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    from retryq_py._sql import ops as _q

    row = conn.execute(_q.SCHEMA_EXISTS, (schema,)).fetchone()
    return bool(row and row[0])


def not_installed(t: Target) -> NotInstalled:
    where = f" --schema {t.schema}" if t.schema else ""
    return NotInstalled(
        f"retryq is not installed in {t.describe()}: run `retryq migrate --database URL{where}`"
    )


@contextmanager
def connect(t: Target, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """A connection to an installed queue, closed at the end."""
    conn = open_connection(t, autocommit=autocommit)
    with conn:
        if not is_installed(conn):
            raise not_installed(t)
        if not autocommit:
            conn.rollback()  # the check must not hold a transaction open
        yield conn


def queue(conn: psycopg.Connection[Any], t: Target) -> RetryQueue:
    """The library's RetryQueue over this connection (autocommit: each call commits)."""
    from retryq_py.queue import RetryQueue

    return RetryQueue(conn, schema=t.schema)


def check(t: Target) -> None:
    """Raise DatabaseUnreachable or NotInstalled unless the queue is usable."""
    with connect(t):
        pass


def check_writable(t: Target) -> None:
    """Raise UsageProblem (a configuration error, exit 2) naming why when a
    session there is read-only: a standby, or default_transaction_read_only
    on (the role's, the database's, PGOPTIONS')."""
    from retryq_py._sql import ops as _q

    with open_connection(t) as conn:
        row = conn.execute(_q.READ_ONLY).fetchone()
    standby, read_only = row if row else (False, False)
    if standby:
        why = "the server is a standby in recovery"
    elif read_only:
        why = (
            "default_transaction_read_only is on for this session (set by the role,"
            " the database, PGOPTIONS or the URL)"
        )
    else:
        return
    raise UsageProblem(
        f"{t.describe()} is read-only: {why}; a worker writes every outcome: point it"
        " at the primary (target_session_attrs=read-write in the URL picks it among"
        " several hosts) as a role whose sessions may write"
    )
