"""Only the server moves the clock (issue 12, item 3).

p_now is honoured for the queue's owner (here the superuser that installed it,
or a role that SET ROLE to a member of the owner) and refused for every group
role with 42501 naming now, with nothing written; NULL and the infinities are
refused for everyone with 22023. A call without p_now uses the server's clock at
the call, so a lease counts from when it is granted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

# function -> (role allowed to call it, SQL with {now} for p_now)
CALLS: dict[str, tuple[str, str]] = {
    "enqueue_retry_item": (
        "retryq_producer", "SELECT enqueue_retry_item('t', '{{}}', p_now => {now})",
    ),
    "enqueue_retry_items": (
        "retryq_producer",
        "SELECT enqueue_retry_items('[{{\"event_type\": \"t\", \"event_data\": {{}}}}]', {now})",
    ),
    "acquire_retry_items": (
        "retryq_worker", "SELECT count(*) FROM acquire_retry_items('w2', 10, 60, {now})",
    ),
    "complete_retry_item": ("retryq_worker", "SELECT complete_retry_item({leased}, 'w', {now})"),
    "complete_retry_items": (
        "retryq_worker", "SELECT complete_retry_items(ARRAY[{leased}], 'w', {now})",
    ),
    "fail_retry_item": (
        "retryq_worker", "SELECT fail_retry_item({leased}, 'w', 'x', p_now => {now})",
    ),
    "extend_retry_lock": ("retryq_worker", "SELECT extend_retry_lock({leased}, 'w', 60, {now})"),
    "snooze_retry_item": (
        "retryq_worker", "SELECT snooze_retry_item({leased}, 'w', 60, p_now => {now})",
    ),
    "snooze_retry_item_outcome": (
        "retryq_worker", "SELECT snooze_retry_item_outcome({leased}, 'w', 60, p_now => {now})",
    ),
    "requeue_dead_letter_items": (
        "retryq_admin", "SELECT requeue_dead_letter_items(ARRAY[{dead}], p_now => {now})",
    ),
    "requeue_dead_letter_items_report": (
        "retryq_admin",
        "SELECT count(*) FROM requeue_dead_letter_items_report(ARRAY[{dead}], p_now => {now})",
    ),
    "cancel_retry_items": (
        "retryq_admin", "SELECT cancel_retry_items(ARRAY[{leased}], p_now => {now})",
    ),
    "cleanup_retry_queue": ("retryq_admin", "SELECT * FROM cleanup_retry_queue(0, p_now => {now})"),
    "cleanup_retry_queue_due": ("retryq_admin", "SELECT * FROM cleanup_retry_queue_due(0, {now})"),
    "retry_circuit_open": ("retryq_admin", "SELECT retry_circuit_open('t', NULL, 60, {now})"),
    "retry_circuit_close": ("retryq_admin", "SELECT retry_circuit_close('t', NULL, {now})"),
    "retry_circuit_configure": (
        "retryq_admin", "SELECT retry_circuit_configure('t', NULL, 3, p_now => {now})",
    ),
    "enqueue_retry_item_once": (
        "retryq_producer",
        "SELECT enqueue_retry_item_once(gen_random_uuid(), 't', '{{}}', p_now => {now})",
    ),
    "retry_queue_pause": ("retryq_admin", "SELECT retry_queue_pause('t', p_now => {now})"),
}
FUTURE = "now() + interval '2 hours'"
STATE = (
    "SELECT (SELECT array_agg(ROW(id, status, locked_by, locked_until, retry_count,"
    " next_retry_at)::text ORDER BY id) FROM daz_retry_queue),"
    " (SELECT array_agg(ROW(c.*)::text) FROM _retryq_circuit AS c),"
    " (SELECT count(*) FROM daz_retry_queue_archive)"
)


@pytest.fixture(scope="module")
def clock_db(module_dsn: str) -> tuple[str, dict[str, int]]:
    with psycopg.connect(module_dsn, autocommit=True) as c:
        def one(q: str) -> Any:
            row = c.execute(q).fetchone()  # type: ignore[arg-type]
            assert row is not None
            return row[0]

        leased = one("SELECT id FROM enqueue_retry_item('t', '1')")
        assert one("SELECT count(*) FROM acquire_retry_items('w', 1, 600)") == 1
        one("SELECT id FROM enqueue_retry_item('t', '2', p_delay_seconds => 3600)")
        dead = one("SELECT id FROM enqueue_retry_item('d', '3', p_max_retries => 0)")
        one("SELECT count(*) FROM acquire_retry_items('w0', 5)")
        assert one(f"SELECT fail_retry_item({dead}, 'w0', 'x')")
    return module_dsn, {"leased": leased, "dead": dead}


@pytest.fixture(scope="module")
def logins(clock_db: tuple[str, dict[str, int]]) -> Iterator[dict[str, str]]:
    dsn, _ = clock_db
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    made = {g: f"t_{g}_{tag}" for g in ("retryq_producer", "retryq_worker", "retryq_admin")}
    with psycopg.connect(dsn, autocommit=True) as c:
        for group, login in made.items():
            c.execute(f'CREATE ROLE "{login}" LOGIN')  # type: ignore[arg-type]
            c.execute(f'GRANT {group} TO "{login}"')  # type: ignore[arg-type]
    try:
        yield made
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            for login in made.values():
                c.execute(f'DROP ROLE IF EXISTS "{login}"')  # type: ignore[arg-type]


def test_every_function_with_a_clock_is_tested(clock_db: tuple[str, dict[str, int]]) -> None:
    dsn, _ = clock_db
    with psycopg.connect(dsn) as c:
        have = {
            name
            for (name,) in c.execute(
                "SELECT p.proname FROM pg_proc AS p"
                " WHERE p.pronamespace = 'public'::regnamespace"
                " AND 'p_now' = ANY(p.proargnames) AND p.proname NOT LIKE '\\_%'"
            ).fetchall()
        }
    assert have == CALLS.keys()


@pytest.mark.parametrize("fn", list(CALLS))
@pytest.mark.parametrize(
    "when", [FUTURE, "now() - interval '2 hours'", "'infinity'", "'-infinity'"]
)
def test_a_role_cannot_move_the_clock(
    clock_db: tuple[str, dict[str, int]], logins: dict[str, str], fn: str, when: str
) -> None:
    dsn, ids = clock_db
    role, text = CALLS[fn]
    query = text.format(now=when, **ids)
    with psycopg.connect(dsn, autocommit=True) as owner:
        before = owner.execute(STATE).fetchone()
        with psycopg.connect(make_conninfo(dsn, user=logins[role])) as c:
            refusal = (
                psycopg.errors.InvalidParameterValue  # no one may, checked first
                if "infinity" in when
                else psycopg.errors.InsufficientPrivilege
            )
            with pytest.raises(refusal) as err:
                c.execute(query)  # type: ignore[arg-type]
            assert err.value.diag.column_name == "now"
            c.rollback()
        assert owner.execute(STATE).fetchone() == before


@pytest.mark.parametrize("fn", list(CALLS))
@pytest.mark.parametrize("when", ["'infinity'", "'-infinity'"])
def test_nobody_may_pass_an_infinite_clock(
    clock_db: tuple[str, dict[str, int]], fn: str, when: str
) -> None:
    dsn, ids = clock_db
    _, text = CALLS[fn]
    with psycopg.connect(dsn) as owner:
        before = owner.execute(STATE).fetchone()
        with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
            owner.execute(text.format(now=when, **ids))  # type: ignore[arg-type]
        assert err.value.diag.column_name == "now"
        owner.rollback()
        assert owner.execute(STATE).fetchone() == before


@pytest.mark.parametrize("fn", list(CALLS))
@pytest.mark.parametrize("when", ["now()", "NULL"])
def test_a_role_may_pass_the_server_clock(
    clock_db: tuple[str, dict[str, int]], logins: dict[str, str], fn: str, when: str
) -> None:
    """p_now => now() (what retryq_py sends when no clock is given) is the
    default, and so is NULL (a driver's unused argument): neither moves it."""
    dsn, ids = clock_db
    role, text = CALLS[fn]
    with psycopg.connect(make_conninfo(dsn, user=logins[role])) as c:
        c.execute(text.format(now=when, **ids))  # type: ignore[arg-type]
        c.rollback()


def test_the_issue_example_takes_no_live_lease(
    clock_db: tuple[str, dict[str, int]], logins: dict[str, str]
) -> None:
    dsn, ids = clock_db
    with psycopg.connect(make_conninfo(dsn, user=logins["retryq_worker"])) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM acquire_retry_items('w2', 10, 60, now() + interval '2 hours')")
        c.rollback()
        # without the clock: neither the live lease nor the item due in an hour
        got = c.execute("SELECT id FROM acquire_retry_items('w2', 10, 60)").fetchall()
        assert ids["leased"] not in [r[0] for r in got]
        assert got == []
        c.rollback()


def test_the_owner_moves_the_clock_through_set_role(
    clock_db: tuple[str, dict[str, int]], logins: dict[str, str]
) -> None:
    """A superuser session that SET ROLE to a group role is that role."""
    dsn, _ = clock_db
    with psycopg.connect(dsn) as c:
        c.execute(f'SET ROLE "{logins["retryq_worker"]}"')  # type: ignore[arg-type]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM acquire_retry_items('w2', 10, 60, now() + interval '1 day')")
        c.rollback()
        c.execute("RESET ROLE")
        rows = c.execute(
            "SELECT id FROM acquire_retry_items('w2', 10, 60, now() + interval '1 day')"
        ).fetchall()
        assert rows  # honoured for the owner (a superuser here)
        c.rollback()


def test_a_lease_counts_from_when_it_is_granted(
    clock_db: tuple[str, dict[str, int]],
) -> None:
    """A lease of 1 s taken 1.5 s into a transaction is still live when returned (it
    was expired on arrival when it counted from the transaction's start). The wait
    is the subject of the test, not a synchronisation."""
    dsn, _ = clock_db
    with psycopg.connect(dsn) as c:
        c.execute("SELECT enqueue_retry_item('lease', '{}')")
        c.commit()
        c.execute("SELECT pg_sleep(1.5)")
        row = c.execute(
            "SELECT locked_until > clock_timestamp(), locked_until - now() >= interval '1.5 s'"
            " FROM acquire_retry_items('wl', 1, 1)"
        ).fetchone()
        assert row == (True, True)
        c.rollback()
