"""Worker processes drain a seeded random workload while the test SIGKILLs some
of them mid-batch and terminates the backends of others.

Every handler writes its effect in the same transaction as the completion
(tests/python/crash_worker.py). At the end every item is completed with exactly one
effect or dead-lettered with none, nothing is left active, and every lease a
killed worker held was taken over (its history names the dead worker).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers import reset
from tests.python import netproxy

WORKER = Path(__file__).with_name("crash_worker.py")
LEASE = 2  # seconds: what a killed worker's items wait before a takeover
BATCH = 5
MAX_RETRIES = 3
DEADLINE = 60.0


def wait_for(what: str, cond: Callable[[], bool], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.02)  # polling the condition, not synchronising by time


def workload(rng: random.Random, n: int) -> list[dict[str, Any]]:
    kinds = rng.choices(["ok", "flaky", "permanent", "hopeless"], weights=[6, 3, 1, 1], k=n)
    return [
        {
            "event_type": "crash",
            "event_data": {"n": i, "kind": kind, "fails": rng.randint(1, MAX_RETRIES)},
            "priority": rng.randint(1, 10),
            "max_retries": MAX_RETRIES,
            "retry_delay_seconds": 0,
        }
        for i, kind in enumerate(kinds)
    ]


class Fleet:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.count = 0

    def start(self) -> str:
        self.count += 1
        worker = f"w{self.count}"
        self.procs[worker] = subprocess.Popen(
            [sys.executable, str(WORKER), self.dsn, worker, str(LEASE), str(BATCH)],
            cwd=WORKER.parents[1],
        )
        return worker

    def alive(self) -> list[str]:
        return [w for w, p in self.procs.items() if p.poll() is None]

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()


def gone(conn: psycopg.Connection[Any], app: str) -> None:
    """Waits until a killed worker's backends have ended: a statement it sent
    just before SIGKILL still runs (and an autocommit one commits) after the
    process is dead, so its leases are only known once its backends are gone.
    Those of this test's database only: another session's crash test on the
    same server names its workers alike (seen: 25 s waits, and a look at the
    killed worker's leases made after they ran out)."""
    wait_for(
        f"{app}'s backends to end",
        lambda: (
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                [app],
            ).fetchone()
            == (0,)
        ),
    )


def holders(conn: psycopg.Connection[Any], alive: list[str]) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT locked_by FROM daz_retry_queue"
        " WHERE status = 'processing' AND locked_by = ANY(%s) ORDER BY 1",
        [alive],
    ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_killed_workers_lose_nothing_and_do_nothing_twice(dsn: str, seed: int) -> None:
    rng = random.Random(seed)
    items = workload(rng, 240)
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        conn.execute("CREATE TABLE effects (item_id bigint NOT NULL, worker_id text NOT NULL)")
        ids = [r[0] for r in conn.execute("SELECT id FROM enqueue_retry_items(%s)", [Jsonb(items)])]
        kinds = {i: it["event_data"] for i, it in zip(ids, items, strict=True)}

        def effects() -> int:
            return int(conn.execute("SELECT count(*) FROM effects").fetchone()[0])  # type: ignore[index]

        fleet = Fleet(dsn)
        orphans: dict[int, str] = {}  # item -> the killed worker that held it
        terminated = 0
        try:
            for _ in range(4):
                fleet.start()
            for round_ in range(6):
                progress = effects()
                wait_for("progress", lambda p=progress: effects() >= p + 15)
                wait_for("a worker holding leases", lambda: bool(holders(conn, fleet.alive())))
                victim = rng.choice(holders(conn, fleet.alive()) or fleet.alive())
                if round_ % 2 == 0:
                    fleet.procs[victim].send_signal(signal.SIGKILL)
                    fleet.procs[victim].wait()
                    gone(conn, f"crash-{victim}")
                    for (item,) in conn.execute(
                        "SELECT id FROM daz_retry_queue"
                        " WHERE status = 'processing' AND locked_by = %s",
                        [victim],
                    ):
                        orphans[item] = victim
                    fleet.start()
                else:
                    row = conn.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = %s AND datname = current_database()",
                        [f"crash-{victim}"],
                    ).fetchone()
                    terminated += row[0] if row else 0
            wait_for("the queue drained", lambda: not fleet.alive())
        finally:
            fleet.stop_all()
        assert all(p.returncode in (0, -signal.SIGKILL) for p in fleet.procs.values())

        assert orphans, "no kill landed mid-batch: the test proved nothing"
        assert terminated > 0
        left = conn.execute("SELECT count(*) FROM _retryq_active").fetchone()
        assert left == (0,), "items left pending or leased"
        rows = conn.execute(
            "SELECT q.id, q.status, q.error_history,"
            " (SELECT count(*) FROM effects AS e WHERE e.item_id = q.id)"
            " FROM daz_retry_queue AS q"
        ).fetchall()
        assert sorted(r[0] for r in rows) == sorted(ids), "items lost"
        stray = conn.execute(
            "SELECT count(*) FROM effects WHERE item_id <> ALL(%s)", [ids]
        ).fetchone()
        assert stray == (0,)
        for item, status, history, n_effects in rows:
            kind = kinds[item]["kind"]
            lost_leases = [h for h in history if h["code"] == "lease_expired"]
            if status == "completed":
                assert n_effects == 1, f"item {item} ({kind}) has {n_effects} effects"
                assert kind in ("ok", "flaky"), f"item {item} ({kind}) completed"
            else:
                assert status == "dead_letter", (item, status)
                assert n_effects == 0, f"dead letter {item} has an effect"
                if kind in ("ok", "flaky"):
                    # only lost leases can spend the budget of an item that succeeds
                    assert len(lost_leases) + kinds[item]["fails"] * (kind == "flaky") > (
                        MAX_RETRIES
                    ), (item, history)
            if item in orphans:
                assert any(h["worker_id"] == orphans[item] for h in lost_leases), (
                    f"item {item} held by killed {orphans[item]} was not taken over: {history}"
                )


# --- the same for RetryWorker (retryq_py.worker) ------------------------------------


def _retry_worker(
    dsn: str,
    worker: str,
    lease: int = LEASE,
    effects_dsn: str | None = None,
    mode: str = "--retry-worker",
) -> subprocess.Popen[bytes]:
    """crash_worker.py in `mode`: --retry-worker or --async-retry-worker."""
    env = {**os.environ, "CRASH_EFFECTS_DSN": effects_dsn} if effects_dsn else None
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            mode,
            f"{dsn} application_name=crash-{worker}",
            worker,
            str(lease),
            str(BATCH),
        ],
        cwd=WORKER.parents[1],
        env=env,
    )


def _setup(conn: psycopg.Connection[Any], seed: int, n: int) -> dict[int, Any]:
    reset(conn)
    conn.execute("CREATE TABLE effects (item_id bigint NOT NULL, worker_id text NOT NULL)")
    items = workload(random.Random(seed), n)
    ids = [r[0] for r in conn.execute("SELECT id FROM enqueue_retry_items(%s)", [Jsonb(items)])]
    return {i: it["event_data"] for i, it in zip(ids, items, strict=True)}


def _final(
    conn: psycopg.Connection[Any],
    kinds: dict[int, Any],
    killed: str | None = None,
    *,
    any_expiry_unacked: bool = False,
) -> list[tuple[Any, ...]]:
    """Checks what holds for any run: nothing active, nothing lost, effects
    only for completed items; returns (id, status, history, effects) rows.
    RetryWorker acknowledges after its handler: a success the killed worker
    had not acknowledged is a lost lease, and when that lost lease spent the
    budget the item is a dead letter whose effect happened."""
    assert conn.execute("SELECT count(*) FROM _retryq_active").fetchone() == (0,)
    rows = conn.execute(
        "SELECT q.id, q.status, q.error_history,"
        " (SELECT count(*) FROM effects AS e WHERE e.item_id = q.id)"
        " FROM daz_retry_queue AS q"
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(kinds), "items lost"
    for item, status, history, n_effects in rows:
        kind = kinds[item]["kind"]
        if status == "completed":
            assert n_effects >= 1, f"completed item {item} ({kind}) never ran"
        else:
            unacked = any(
                h["code"] == "lease_expired"
                and (any_expiry_unacked or h.get("worker_id") == killed)
                for h in history
            )
            assert status == "dead_letter", (item, status)
            assert n_effects == 0 or (n_effects == 1 and unacked), (item, n_effects, history)
            if kind in ("ok", "flaky"):
                lost = sum(h["code"] == "lease_expired" for h in history)
                assert lost + kinds[item]["fails"] * (kind == "flaky") > MAX_RETRIES, history
    return rows


def _kill_while_holding(conn: psycopg.Connection[Any], proc: Any, worker: str) -> set[int]:
    """SIGKILL while the queue says the worker holds leases: stopped first
    (SIGSTOP), so that it cannot acknowledge them between the look and the
    kill; let go again (SIGCONT) and looked at later when it held none (a
    kill right after a batch was acknowledged proved nothing, seen under
    CI load). Returns the items it held when killed.

    The look waits until every thread of the worker has stopped and none of
    its statements still runs (a statement sent just before the stop commits
    after it). What it held is read then, not after the kill: a stopped
    worker renews nothing, and under load its leases ran out and the other
    worker took them over before a later look, which found none held (the
    test's "proved nothing", seen under load)."""
    for _ in range(50):
        _wait_holding(conn, worker)
        proc.send_signal(signal.SIGSTOP)
        wait_for(f"{worker} stopped", lambda: _stopped(proc.pid))
        wait_for(
            f"{worker}'s statements to end",
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                    " AND datname = current_database() AND state = 'active'",
                    [f"crash-{worker}"],
                ).fetchone()
                == (0,)
            ),
        )
        held = {
            r[0]
            for r in conn.execute(
                "SELECT id FROM daz_retry_queue WHERE status = 'processing' AND locked_by = %s",
                [worker],
            )
        }
        if held:
            break
        proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return held


def _stopped(pid: int) -> bool:
    """Every thread of the process is stopped (state T in /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    states = []
    for task in tasks.iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # a thread that ended
        states.append(stat.rsplit(")", 1)[1].split()[0])
    return all(state in ("T", "t") for state in states)


def _wait_holding(conn: psycopg.Connection[Any], worker: str) -> None:
    wait_for(
        f"{worker} holding leases after some work",
        lambda: (
            bool(holders(conn, [worker]))
            and conn.execute("SELECT count(*) > 10 FROM effects").fetchone() == (True,)
        ),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode", ["--retry-worker", "--async-retry-worker"], ids=["threads", "asyncio"]
)
def test_retry_worker_sigterm_finishes_or_releases_everything_it_holds(dsn: str, mode: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        kinds = _setup(conn, 3, 150)
        a, b = _retry_worker(dsn, "rw-a", mode=mode), _retry_worker(dsn, "rw-b", mode=mode)
        try:
            _wait_holding(conn, "rw-a")
            a.send_signal(signal.SIGTERM)
            assert a.wait(DEADLINE) == 0
            # in-flight items were finished or released, not left to expire
            assert holders(conn, ["rw-a"]) == []
            assert b.wait(DEADLINE) == 0
        finally:
            for p in (a, b):
                if p.poll() is None:
                    p.kill()
                p.wait()
        rows = _final(conn, kinds)
        for item, _, history, n_effects in rows:
            assert not any(
                h.get("worker_id") == "rw-a" and h["code"] == "lease_expired" for h in history
            ), f"item {item}: rw-a's lease had to expire"
            assert n_effects <= 1, f"item {item} ran {n_effects} times after a graceful stop"


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode", ["--retry-worker", "--async-retry-worker"], ids=["threads", "asyncio"]
)
def test_retry_worker_sigkill_loses_nothing(dsn: str, mode: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        kinds = _setup(conn, 4, 150)
        a, b = _retry_worker(dsn, "rw-a", mode=mode), _retry_worker(dsn, "rw-b", mode=mode)
        try:
            orphans = _kill_while_holding(conn, a, "rw-a")
            gone(conn, "crash-rw-a")
            assert b.wait(DEADLINE) == 0
        finally:
            for p in (a, b):
                if p.poll() is None:
                    p.kill()
                p.wait()
        assert orphans, "the kill landed outside a batch: the test proved nothing"
        rows = _final(conn, kinds, killed="rw-a")
        for item, _, history, n_effects in rows:
            taken_over = any(
                h.get("worker_id") == "rw-a" and h["code"] == "lease_expired" for h in history
            )
            if item in orphans:
                assert taken_over, f"item {item} held by the killed worker was not taken over"
            # at least once: a second run only where the killed worker's lease was lost
            assert n_effects <= 1 or taken_over, (item, n_effects, history)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode", ["--retry-worker", "--async-retry-worker"], ids=["threads", "asyncio"]
)
def test_retry_workers_drain_around_poison_values(dsn: str, mode: str) -> None:
    """Rows a Go producer can write that Python cannot decode, and handlers
    whose error text PostgreSQL cannot store as given, mixed into the load:
    both workers end normally, each poison item is a dead letter that says
    why, and every other item ends as it would have."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        kinds = _setup(conn, 5, 120)
        poison = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM enqueue_retry_items(%s)",
                [
                    Jsonb(
                        [
                            {
                                "event_type": "crash",
                                "event_data": {"kind": "poison"},
                                "max_retries": 1,
                                "retry_delay_seconds": 0,
                            }
                        ]
                        * 5
                    )
                ],
            )
        ]
        undecodable = [
            r[0]
            for r in conn.execute(
                "INSERT INTO daz_retry_queue (event_type, event_data, next_retry_at)"
                " SELECT 'crash', ('{\"n\": ' || repeat('9', 5000) || '}')::jsonb, t"
                " FROM unnest(ARRAY['-infinity', 'now', 'now', 'now', 'now']::timestamptz[]) t"
                " RETURNING id"
            )
        ]
        a, b = _retry_worker(dsn, "rw-a", mode=mode), _retry_worker(dsn, "rw-b", mode=mode)
        try:
            assert a.wait(DEADLINE) == 0 and b.wait(DEADLINE) == 0
        finally:
            for p in (a, b):
                if p.poll() is None:
                    p.kill()
                p.wait()
        codes = dict(
            conn.execute(
                "SELECT id, last_error_code FROM daz_retry_queue WHERE status = 'dead_letter'"
                " AND id = ANY(%s)",
                [poison + undecodable],
            ).fetchall()
        )
        assert {codes.get(i, "").split("x")[0] for i in poison} == {"P\\0"}, codes
        assert {codes.get(i) for i in undecodable} == {"retryq.undecodable_item"}, codes
        conn.execute("DELETE FROM daz_retry_queue WHERE id = ANY(%s)", [poison + undecodable])
        for item, _, history, n_effects in _final(conn, kinds):
            assert n_effects <= 1, (item, history)
            assert not any(h["code"] == "lease_expired" for h in history), (item, history)


@pytest.mark.slow
# Out of quarantine (issue 13 item 4). It failed about 1 run in 40 (a batch
# of one worker's leases expired together). Two causes, both fixed: the
# proxy's cuts left the server side of every idle connection open (about 50
# server processes a run), so a second run or another session's crash test
# made the server refuse connections, the pool could not reconnect and the
# heartbeat renewed nothing; and the leases of a lost acquire were renewed
# by nobody until a lane took them up, which a second cut could delay past
# the lease (the heartbeat now renews them; see test_worker_faults.py).
# Looped since, two loops side by side (load 12-14 on 2 cores): 146 runs
# (51 at 43b1119, 60 at 7c3304c, 35 after main's merge at 3515b1d), none
# failed; and 13 runs with 24 cuts each, before the heartbeat fix.
def test_retry_workers_settle_connections_cut_around_commit(dsn: str) -> None:
    """Every connection of two workers reset (RST) again and again while they
    drain, so that some cuts land between a commit and its reply: each lost
    reply is settled by asking the queue (what was written, what was leased),
    so no item's lease expires under a live worker, nothing is lost and no
    success is counted as a lost lease."""
    with psycopg.connect(dsn, autocommit=True) as conn, netproxy.proxy(dsn) as net:
        kinds = _setup(conn, 6, 200)

        def effects() -> int:
            return int(conn.execute("SELECT count(*) FROM effects").fetchone()[0])  # type: ignore[index]

        # a lease long enough that only an unsettled reply can let one expire
        a = _retry_worker(net.dsn, "rw-a", lease=10, effects_dsn=dsn)
        b = _retry_worker(net.dsn, "rw-b", lease=10, effects_dsn=dsn)
        cuts = 0
        try:
            for _ in range(8):
                progress = effects()
                wait_for("progress", lambda p=progress: effects() >= p + 10 or a.poll() is not None)
                if a.poll() is not None and b.poll() is not None:
                    break
                net.cut()
                cuts += 1
            assert a.wait(DEADLINE) == 0 and b.wait(DEADLINE) == 0
        finally:
            for p in (a, b):
                if p.poll() is None:
                    p.kill()
                p.wait()
        assert cuts >= 3, "the workers finished before the cuts: the test proved nothing"
        expired: list[Any] = []
        # an expired lease (at most one, below) leaves its success unacknowledged
        for item, _, history, n_effects in _final(conn, kinds, any_expiry_unacked=True):
            expired += [(item, h) for h in history if h["code"] == "lease_expired"]
            assert n_effects <= 1, (item, history)  # no lost reply made a second run
        # One expired lease is let pass: before the adoption kept its doubt
        # when its renewal was cut off, one lease in about one run in five
        # expired under its live worker; none did in 33 runs since (load
        # 6-10), but a heartbeat starved under CI load could still lose one.
        # Before the settling, no run got this far (the workers stalled on
        # leases they did not know they held).
        assert len(expired) <= 1, f"leases expired under live workers: {expired}"
