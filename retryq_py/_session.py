"""The session settings retryq's reads depend on, whoever set them.

A role or a database (ALTER ROLE/DATABASE ... SET), PGOPTIONS, PGDATESTYLE,
PGCLIENTENCODING or the DSN can give a session settings that change what
retryq reads:

- client_encoding: under another encoding than UTF8 the server cannot send
  an item holding a character that encoding lacks (22P05), and a lease
  that includes it fails whole, for every worker, every time;
- DateStyle: psycopg reads a timestamptz sent as text only in ISO
  (NotImplementedError otherwise: every leased item was undecodable).

Connections retryq opens get both: the `client_encoding` keyword (OWN_KWARGS:
a startup parameter, which a role's, a database's and PGCLIENTENCODING's
setting give way to, and which PgBouncer passes on), then `pin` sets, in
one statement, what still differs. PgBouncer tracks DateStyle,
client_encoding and standard_conforming_strings for each client and sets
them on every server connection it lends, so the pin survives transaction
pooling (a startup `options` does not: PgBouncer refuses it unless
ignore_startup_parameters lists it, and then drops it).

On a connection you give retryq (RetryQueue, AsyncRetryQueue, the ops
functions, a pool given to a worker or to the metrics collector), nothing
is set behind your back: `require` refuses a client_encoding other than
UTF8 (SessionSettingError), and the clients read timestamps in binary, which
no DateStyle, IntervalStyle, TimeZone or extra_float_digits changes
(`binary_reads`). A cursor that binds client-side (ClientCursor) reads only
text: its session must be ISO. The worker's flush reads text (one simple
query): a pool you give a worker must be ISO too.

Left as the session has them: IntervalStyle, extra_float_digits and
bytea_output (the worker reads no interval, float or bytea; elsewhere a float
read as text only loses digits on display; PgBouncer does not track them, so
a SET would reach other clients of its server connections); TimeZone (times
are instants, read with their offset); search_path (each function runs with
the one it was installed with); default_transaction_isolation (each call is
one statement; a 40001 is retried); default_transaction_read_only and a
standby (`retryq worker` refuses them at start; a running worker waits a
25006 out, as during a failover).
"""

from __future__ import annotations

from typing import Any

import psycopg

# For connections retryq opens: the startup parameter (no round trip).
OWN_KWARGS: dict[str, Any] = {"client_encoding": "UTF8"}

# (parameter as the server reports it, the value `pin` sets).
# standard_conforming_strings: the flush quotes its literals once for all its
# connections.
_PINNED: tuple[tuple[str, str], ...] = (
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("standard_conforming_strings", "on"),
)


class SessionSettingError(psycopg.ProgrammingError):
    """A session setting retryq cannot read the queue under, on a connection
    it was given (a ProgrammingError without SQLSTATE: the worker stops on
    it, as on any configuration error). The message names the setting, its
    value and the fix."""


def _reported(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], name: str) -> str:
    value = conn.pgconn.parameter_status(name.encode())
    return value.decode("ascii", "replace") if value is not None else ""


def _ok(name: str, reported: str) -> bool:
    if name == "DateStyle":
        return reported.upper().startswith("ISO")
    if name == "client_encoding":
        return reported == "UTF8"
    return reported == "on"


def pin(conn: psycopg.Connection[Any]) -> None:
    """On a connection retryq opened: set what differs from what retryq needs
    (no round trip when nothing does). A connection not in autocommit is
    committed, so that the setting outlives the transaction."""
    wrong = [(n, v) for n, v in _PINNED if not _ok(n, _reported(conn, n))]
    if not wrong:
        return
    calls = ", ".join("pg_catalog.set_config(%s, %s, false)" for _ in wrong)
    conn.execute(f"SELECT {calls}", [x for pair in wrong for x in pair])
    if not conn.autocommit:
        conn.commit()


def require(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], *, datestyle: bool = False
) -> None:
    """On a connection retryq was given: raise SessionSettingError unless its
    client_encoding is UTF8 and, with `datestyle` (it will read timestamps
    as text), its DateStyle is ISO. No round trip: the server reports both
    (about 0.3 us a call)."""
    status = conn.pgconn.parameter_status
    if status(b"client_encoding") != b"UTF8":
        encoding = _reported(conn, "client_encoding")
        raise SessionSettingError(
            f"retryq needs client_encoding UTF8 on the connections it is given; this one is"
            f" {encoding or 'unknown'} (set by the DSN, PGCLIENTENCODING, the role or the"
            " database): connect with client_encoding=UTF8, or the server cannot send an"
            " item holding a character that encoding lacks"
        )
    if datestyle and not (status(b"DateStyle") or b"").upper().startswith(b"ISO"):
        style = _reported(conn, "DateStyle")
        raise SessionSettingError(
            f"retryq reads timestamps as text on this connection and needs DateStyle"
            f" ISO; it is {style or 'unknown'!r} (set by the role, the database,"
            " PGDATESTYLE or PGOPTIONS): connect with options='-c DateStyle=ISO'"
            " (behind PgBouncer: SET DateStyle TO ISO when the connection opens)"
        )


_CLIENT_SIDE = (psycopg.ClientCursor, psycopg.AsyncClientCursor)


def binary_reads(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether retryq's read on this cursor (of a connection it was given)
    asks for binary rows: True, unless the cursor binds client-side, which
    reads text only; its session must then be ISO (SessionSettingError)."""
    if isinstance(cur, _CLIENT_SIDE):
        require(cur.connection, datestyle=True)
        return False
    return True
