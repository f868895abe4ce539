"""A randomized hunt for deadlocks (issue 12, item 5): several connections, two keys,
leases that expire while their holders still write outcomes, every verb of the API
in transactions of one to three calls (snoozes, pauses, rate limits and
enqueue_retry_item_once over a few event ids included: one role may be producer and
worker),
circuits that trip and probe. The server's
deadlock detector is set to 20 ms, so a cycle costs little; the hunt must see no
40P01. The lock order it checks is written down in sql/private/_retryq_circuit_lock.sql.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from typing import Any

import psycopg
import pytest

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
KEYS = [("a", None), ("b", "p")]
WORKERS = 4
SECONDS = 12.0


class Clock:
    """One clock for all connections, moved forward by each transaction, so leases
    (1 to 3 s) run out under their holders."""

    def __init__(self) -> None:
        self._now = T0
        self._lock = threading.Lock()

    def tick(self, rng: random.Random) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(seconds=rng.choice([0, 0, 0.5, 1, 2, 4]))
            return self._now


def _call(conn: psycopg.Connection[Any], rng: random.Random, me: str, held: list[int],
          now: dt.datetime) -> None:
    verb = rng.choice([
        "enqueue", "acquire", "acquire", "complete", "complete_many", "fail", "fail",
        "extend", "release", "requeue", "purge", "cleanup", "circuit", "list", "cancel",
        "snooze", "pause", "rate_limit", "enqueue_once", "enqueue_once", "enqueue_once",
    ])
    some = rng.sample(held, min(len(held), rng.randint(1, 3))) if held else [rng.randint(1, 50)]
    if verb == "enqueue":
        e, p = rng.choice(KEYS)
        conn.execute(
            "SELECT enqueue_retry_item(%s, '{}', p_plugin_name => %s, p_max_retries => 2,"
            " p_retry_delay_seconds => 1, p_now => %s)", [e, p, now])
    elif verb == "enqueue_once":
        # few ids, so that transactions meet on one (most calls find it there)
        e, p = rng.choice(KEYS)
        conn.execute(
            "SELECT * FROM enqueue_retry_item_once(%s, %s, '{}', p_plugin_name => %s,"
            " p_max_retries => 2, p_retry_delay_seconds => 1, p_now => %s)",
            [f"00000000-0000-4000-8000-00000000000{rng.randint(1, 2)}", e, p, now])
    elif verb == "acquire":
        rows = conn.execute(
            "SELECT id FROM acquire_retry_items(%s, %s, %s, %s)",
            [me, rng.randint(1, 4), rng.randint(1, 3), now]).fetchall()
        held.extend(r[0] for r in rows)
    elif verb == "complete":
        conn.execute("SELECT complete_retry_item(%s, %s, %s)", [some[0], me, now])
    elif verb == "complete_many":
        conn.execute("SELECT complete_retry_items(%s, %s, %s)", [some, me, now])
    elif verb == "fail":
        conn.execute(
            "SELECT fail_retry_item(%s, %s, 'boom', 'E', %s, %s)",
            [some[0], me, rng.random() < 0.8, now])
    elif verb == "extend":
        conn.execute("SELECT extend_retry_lock(%s, %s, %s, %s)", [some[0], me, 2, now])
    elif verb == "release":
        conn.execute("SELECT release_retry_items(%s, %s)", [some, me])
    elif verb == "requeue":
        conn.execute(
            "SELECT requeue_dead_letter_items(p_event_type => %s, p_now => %s)",
            [rng.choice(KEYS)[0], now])
    elif verb == "purge":
        conn.execute(
            "SELECT purge_dead_letter_items(p_item_ids => %s)",
            [[rng.randint(1, 60) for _ in range(3)]])
    elif verb == "cancel":
        conn.execute(
            "SELECT cancel_retry_items(p_item_ids => %s, p_now => %s)",
            [[rng.randint(1, 60) for _ in range(2)], now])
    elif verb == "snooze":
        conn.execute(
            "SELECT snooze_retry_item(%s, %s, %s, %s, %s)",
            [some[0], me, rng.choice([0, 1, 2]), rng.randint(0, 2), now])
    elif verb == "pause":
        e, p = rng.choice(KEYS)
        if rng.random() < 0.5:
            conn.execute("SELECT retry_queue_pause(%s, %s, p_now => %s)", [e, p, now])
        else:
            conn.execute("SELECT retry_queue_resume(%s, %s)", [e, p])
    elif verb == "rate_limit":
        e, p = rng.choice(KEYS)
        if rng.random() < 0.6:
            conn.execute(
                "SELECT retry_rate_limit_set(%s, %s, %s, 1)", [e, p, rng.randint(1, 3)])
        else:
            conn.execute("SELECT retry_rate_limit_clear(%s, %s)", [e, p])
    elif verb == "cleanup":
        conn.execute("SELECT * FROM cleanup_retry_queue(0, 5, p_now => %s)", [now])
    elif verb == "circuit":
        e, p = rng.choice(KEYS)
        fn = rng.choice(["open", "close", "configure"])
        if fn == "open":
            conn.execute(
                "SELECT retry_circuit_open(%s, %s, %s, %s)", [e, p, rng.choice([None, 1]), now])
        elif fn == "close":
            conn.execute("SELECT retry_circuit_close(%s, %s, %s)", [e, p, now])
        else:
            conn.execute(
                "SELECT retry_circuit_configure(%s, %s, %s)", [e, p, rng.randint(1, 3)])
    else:
        conn.execute("SELECT count(*) FROM list_dead_letter_items()")


def _hunter(dsn: str, seed: int, clock: Clock, stop: float, out: dict[str, int]) -> None:
    rng = random.Random(seed)
    me = f"w{seed}"
    held: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET deadlock_timeout = '20ms'")
        conn.execute("SET lock_timeout = '20s'")  # a stuck wait fails the hunt, not CI
        while time.monotonic() < stop:
            conn.execute("BEGIN")
            try:
                for _ in range(rng.randint(1, 3)):
                    _call(conn, rng, me, held, clock.tick(rng))
                conn.execute("COMMIT")
                out["committed"] += 1
            except psycopg.errors.DeadlockDetected:
                conn.execute("ROLLBACK")
                out["deadlocks"] += 1
            except psycopg.errors.LockNotAvailable as e:
                # an operator's circuit, pause or rate limit call, or an enqueue once,
                # in a transaction that already wrote: refused instead of waiting
                # (55P03), never a 40P01
                conn.execute("ROLLBACK")
                assert any(
                    k in str(e) for k in ("circuit", "pause", "rate limit", "being added")
                ), e
                out["refused"] += 1
            if len(held) > 12:
                del held[:6]


def test_no_deadlock_in_a_random_mix_of_every_verb(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT retry_circuit_configure(NULL, NULL, 3, 1, 4)")
        for i in range(20):
            e, p = KEYS[i % 2]
            conn.execute(
                "SELECT enqueue_retry_item(%s, '{}', p_plugin_name => %s, p_max_retries => 2,"
                " p_now => %s)", [e, p, T0])
    clock = Clock()
    stop = time.monotonic() + SECONDS
    outs = [{"committed": 0, "deadlocks": 0, "refused": 0} for _ in range(WORKERS)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            _hunter(dsn, i + 1, clock, stop, outs[i])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 60)
    if errors:
        raise errors[0]
    total = {k: sum(o[k] for o in outs) for k in outs[0]}
    assert total["committed"] > 200, total  # the hunt did run
    assert total["deadlocks"] == 0, total


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
