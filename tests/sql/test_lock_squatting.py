"""No role outside retryq can make an API call wait or skip by holding a lock
(issue 12, items 3/4 and 5).

The functions used advisory locks under fixed, guessable keys (and pg_locks shows
every held key to everyone). A login role with no retryq grant, holding those keys,
hung fail_retry_item, the circuit, pause and rate limit calls and
enqueue_retry_item_once, turned the circuit books of a lease takeover off for a key
and made every scheduled cleanup skip. Here such a role holds every key the
functions ever used while the calls run under a 1 s lock_timeout, so a wait fails
the test instead of hanging it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from retryq_py import RetryQueue

Conn = psycopg.Connection[Any]
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
EVENT = "00000000-0000-4000-8000-00000000d05e"
CHANNEL = "public.daz_retry_queue"  # retry_queue_channel() of an install in public

# every advisory key the functions and the Python client took before (issue 12)
SQUATS = [
    "pg_advisory_lock(hashtext('retryq._retryq_circuit'), hashtext('dos.t' || chr(31) || 'p'))",
    "pg_advisory_lock(hashtext('retryq._retryq_pause'), hashtext(chr(30) || chr(31) || chr(30)))",
    "pg_advisory_lock(hashtext('retryq._retryq_pause'), hashtext('dos.t' || chr(31) || 'p'))",
    "pg_advisory_lock(hashtext('retryq._retryq_rate_limit'), hashtext('dos.t' || chr(31) || 'p'))",
    f"pg_advisory_lock(hashtext('retryq.enqueue:{CHANNEL}'), hashtext('{EVENT}'))",
    f"pg_advisory_lock(hashtext('retryq.cleanup:{CHANNEL}'))",
]


@pytest.fixture(scope="module")
def nobody() -> Iterator[str]:
    """The name of a LOGIN role in no retryq group (made in each test's database
    cluster: roles are cluster-wide), dropped afterwards."""
    yield f"t_squatter_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def squat(squatter: Conn) -> None:
    for key in SQUATS:
        squatter.execute(f"SELECT {key}")  # type: ignore[arg-type]


@pytest.fixture
def squatter(dsn: str, nobody: str) -> Iterator[Conn]:
    """A session of a role with only CONNECT (it takes SQUATS' keys on `squat`)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'CREATE ROLE "{nobody}" LOGIN')  # type: ignore[arg-type]
    try:
        with psycopg.connect(make_conninfo(dsn, user=nobody), autocommit=True) as s:
            yield s
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'DROP ROLE IF EXISTS "{nobody}"')  # type: ignore[arg-type]


@pytest.fixture
def victim(dsn: str) -> Iterator[Conn]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET lock_timeout = '1s'")  # waiting fails the test (55P03)
        c.execute("SET statement_timeout = '10s'")
        yield c


def _leased(conn: Conn, worker: str = "w1") -> int:
    item = conn.execute(
        "SELECT id FROM enqueue_retry_item('dos.t', '{}', p_plugin_name => 'p', p_now => %s)",
        [T0],
    ).fetchone()[0]  # type: ignore[index]
    got = conn.execute("SELECT id FROM acquire_retry_items(%s, 1, 10, %s)", [worker, T0])
    assert got.fetchall() == [(item,)]
    return int(item)


# name -> (what is there before the squat, the call, what it returns)
CALLS: dict[str, tuple[str | None, str, Any]] = {
    "circuit_open": (None, "SELECT retry_circuit_open('dos.t', 'p')", True),
    "circuit_close": (
        "SELECT retry_circuit_open('dos.t', 'p')", "SELECT retry_circuit_close('dos.t', 'p')", True
    ),
    "circuit_configure": (None, "SELECT retry_circuit_configure('dos.t', 'p', 3)", True),
    "pause_all": (None, "SELECT retry_queue_pause(p_reason => 'incident')", True),
    "resume_all": ("SELECT retry_queue_pause()", "SELECT retry_queue_resume()", True),
    "pause_key": (None, "SELECT retry_queue_pause('dos.t', 'p')", True),
    "rate_limit_set": (None, "SELECT retry_rate_limit_set('dos.t', 'p', 5, 1)", True),
    "rate_limit_clear": (
        "SELECT retry_rate_limit_set('dos.t', 'p', 5, 1)",
        "SELECT retry_rate_limit_clear('dos.t', 'p')",
        True,
    ),
    "enqueue_once": (
        None, f"SELECT inserted FROM enqueue_retry_item_once('{EVENT}', 'dos.t', '{{}}')", True
    ),
    "enqueue_once_again": (
        f"SELECT inserted FROM enqueue_retry_item_once('{EVENT}', 'dos.t', '{{}}')",
        f"SELECT inserted FROM enqueue_retry_item_once('{EVENT}', 'dos.t', '{{}}')",
        False,
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_a_role_without_grants_cannot_hang_a_call(
    squatter: Conn, victim: Conn, name: str
) -> None:
    before, sql, expected = CALLS[name]
    if before:
        victim.execute(before)  # type: ignore[arg-type]
    squat(squatter)
    assert victim.execute(sql).fetchone() == (expected,)  # type: ignore[arg-type]


def test_a_role_without_grants_cannot_hang_a_failure(squatter: Conn, victim: Conn) -> None:
    """The red team's example: every worker failing an item of the key hung."""
    item = _leased(victim)
    squat(squatter)
    assert victim.execute(
        "SELECT fail_retry_item(%s, 'w1', 'e', p_now => %s)", [item, T0]
    ).fetchone() == (True,)
    row = victim.execute(
        "SELECT consecutive_failures FROM _retryq_circuit WHERE event_type = 'dos.t'"
    ).fetchone()
    assert row == (1,)


def test_a_role_without_grants_cannot_turn_off_a_takeover_s_circuit_books(
    squatter: Conn, victim: Conn
) -> None:
    """While the key was held, acquire's takeover of an expired lease skipped the
    circuit's books: the breaker was off for that key."""
    item = _leased(victim)
    squat(squatter)
    got = victim.execute(
        "SELECT id FROM acquire_retry_items('w2', 1, 10, %s)", [T0 + dt.timedelta(seconds=20)]
    )
    assert got.fetchall() == [(item,)]
    row = victim.execute(
        "SELECT consecutive_failures, lease_expiries FROM _retryq_circuit"
        " WHERE event_type = 'dos.t' AND plugin_name = 'p'"
    ).fetchone()
    assert row == (1, 1)


def test_a_role_without_grants_cannot_make_cleanup_skip(squatter: Conn, victim: Conn) -> None:
    """The Python client's scheduled cleanup skipped for as long as anyone held its key."""
    item = _leased(victim)
    victim.execute("SELECT complete_retry_item(%s, 'w1', %s)", [item, T0])
    squat(squatter)
    q = RetryQueue(victim)
    assert q.try_cleanup(0, now=T0 + dt.timedelta(days=1)) is not None
    assert victim.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (0,)


def test_the_locks_that_replaced_them_need_the_owner_s_rights(
    dsn: str, squatter: Conn
) -> None:
    for sql in (
        "SELECT 1 FROM _retryq_mutex FOR UPDATE",
        "INSERT INTO _retryq_mutex VALUES ('\\x00')",
        "SELECT 1 FROM _retryq_circuit FOR UPDATE",
        "SELECT 1 FROM daz_retry_queue FOR UPDATE",
        "LOCK TABLE _retryq_circuit",
        "LOCK TABLE _retryq_mutex",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), squatter.transaction():
            squatter.execute(sql)  # type: ignore[arg-type]


def test_no_function_and_no_client_statement_takes_an_advisory_lock(conn: Conn) -> None:
    """The kind, not the examples: any advisory lock is one a stranger can hold."""
    used = conn.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        " AND prosrc ~* 'pg_(try_)?advisory' ORDER BY 1"
    ).fetchall()
    assert used == []
    root = Path(__file__).resolve().parents[2] / "retryq_py"
    calls = [
        str(p) for p in root.rglob("*.py")
        if re.search(r"pg_(try_)?advisory", p.read_text())
    ]
    assert calls == []
