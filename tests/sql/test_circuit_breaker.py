"""The circuit breaker in SQL: trip, wait, probe, close, reopen, forced states.

The clock moves through p_now; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
Conn = psycopg.Connection[Any]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive, _retryq_circuit")
        # threshold 3, cool-down 60 s doubling up to 600 s
        c.execute(
            "SELECT retry_circuit_configure(NULL, NULL, 3, 60, 600)"
        )
        yield c


def enqueue(c: Conn, n: int, event_type: str = "http.call", plugin: str | None = "web",
            max_retries: int = 5) -> list[int]:
    item = {"event_type": event_type, "event_data": {}, "plugin_name": plugin,
            "max_retries": max_retries, "retry_delay_seconds": 0}
    rows = c.execute(
        "SELECT id FROM enqueue_retry_items(%s, %s)", (Jsonb([item] * n), T0)
    ).fetchall()
    return [r["id"] for r in rows]


def acquire(c: Conn, worker: str, now: datetime, batch: int = 100,
            timeout: int = 300) -> list[dict[str, Any]]:
    return c.execute(
        "SELECT * FROM acquire_retry_items(%s, %s, %s, %s)", (worker, batch, timeout, now)
    ).fetchall()


def fail(c: Conn, item: int, worker: str, now: datetime, retryable: bool = True) -> bool:
    row = c.execute(
        "SELECT fail_retry_item(%s, %s, 'boom', 'E1', %s, %s) AS ok",
        (item, worker, retryable, now),
    ).fetchone()
    assert row is not None
    return bool(row["ok"])


def complete(c: Conn, item: int, worker: str, now: datetime) -> bool:
    row = c.execute(
        "SELECT complete_retry_item(%s, %s, %s) AS ok", (item, worker, now)
    ).fetchone()
    assert row is not None
    return bool(row["ok"])


def circuit(c: Conn, event_type: str = "http.call", plugin: str | None = "web") -> dict[str, Any]:
    # the view's state uses now(); the stored row shows the raw state
    row = c.execute(
        "SELECT v.*, c.state AS raw_state, c.next_probe_at FROM daz_retry_queue_circuits AS v"
        " JOIN _retryq_circuit AS c ON c.event_type = v.event_type"
        "  AND c.plugin_name = coalesce(v.plugin_name, '')"
        " WHERE v.event_type = %s AND v.plugin_name IS NOT DISTINCT FROM %s",
        (event_type, plugin),
    ).fetchone()
    assert row is not None, "no circuit row"
    return row


def retry_counts(c: Conn, ids: list[int]) -> dict[int, int]:
    rows = c.execute(
        "SELECT id, retry_count FROM daz_retry_queue WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return {r["id"]: r["retry_count"] for r in rows}


def trip(c: Conn, now: datetime, worker: str = "w1") -> list[int]:
    """Three failures of http.call/web at `now`: the circuit opens."""
    ids = enqueue(c, 3)
    got = acquire(c, worker, now)
    assert sorted(r["id"] for r in got if r["event_type"] == "http.call") == ids
    for i in ids:
        assert fail(c, i, worker, now)
    return ids


def test_failing_dependency_trips_and_items_keep_their_budget(db: Conn) -> None:
    first = trip(db, T0)
    cb = circuit(db)
    assert (cb["raw_state"], cb["consecutive_failures"]) == ("open", 3)
    assert cb["open_until"] == at(60)
    assert cb["times_opened"] == 1

    behind = enqueue(db, 20)  # more work for the broken dependency
    other = enqueue(db, 2, event_type="mail.send", plugin="smtp")
    # During the cool-down, many acquires: only the other key's items move.
    got = acquire(db, "w2", at(1))
    assert sorted(r["id"] for r in got) == other
    for second in range(2, 60, 7):
        assert acquire(db, "w2", at(second)) == []
    counts = retry_counts(db, first + behind)
    assert all(counts[i] == 1 for i in first)  # their one real failure
    assert all(counts[i] == 0 for i in behind)  # budget untouched
    pending = db.execute(
        "SELECT count(*) AS n FROM daz_retry_queue WHERE event_type = 'http.call'"
        " AND status = 'pending'"
    ).fetchone()
    assert pending == {"n": 23}


def test_half_open_hands_out_exactly_one_probe(db: Conn) -> None:
    trip(db, T0)
    enqueue(db, 5)
    assert acquire(db, "w2", at(59.9)) == []
    probe = acquire(db, "w2", at(60))
    assert len(probe) == 1
    cb = circuit(db)
    assert (cb["raw_state"], cb["probe_item_id"]) == ("half_open", probe[0]["id"])
    # while the probe is out nobody else gets items of that key
    assert acquire(db, "w3", at(61)) == []
    assert acquire(db, "w2", at(200)) == []


def test_probe_success_closes_and_releases_the_backlog(db: Conn) -> None:
    trip(db, T0)
    enqueue(db, 5)
    probe = acquire(db, "w2", at(60))
    assert complete(db, probe[0]["id"], "w2", at(61))
    cb = circuit(db)
    assert (cb["state"], cb["consecutive_failures"], cb["trips"]) == ("closed", 0, 0)
    assert cb["closed_at"] == at(61)
    assert len(acquire(db, "w2", at(62))) == 3 + 5 - 1


def test_probe_failure_reopens_with_a_doubled_capped_cooldown(db: Conn) -> None:
    trip(db, T0)
    enqueue(db, 10, max_retries=20)
    now = at(60)
    expected = [120, 240, 480, 600, 600]
    for cooldown in expected:
        probe = acquire(db, "w2", now)
        assert len(probe) == 1
        assert fail(db, probe[0]["id"], "w2", now)
        cb = circuit(db)
        assert cb["raw_state"] == "open"
        assert cb["open_until"] == now + timedelta(seconds=cooldown)
        # still closed to everyone just before the end of the new cool-down
        assert acquire(db, "w3", now + timedelta(seconds=cooldown - 1)) == []
        now = now + timedelta(seconds=cooldown)
    assert circuit(db)["times_opened"] == 1 + len(expected)


def test_lease_expiries_count_and_trip(db: Conn) -> None:
    ids = enqueue(db, 3)
    assert len(acquire(db, "dead-worker", T0, timeout=10)) == 3
    # the leases run out; another worker takes them over
    taken = acquire(db, "w2", at(11))
    assert sorted(r["id"] for r in taken) == ids
    cb = circuit(db)
    assert (cb["raw_state"], cb["consecutive_failures"], cb["lease_expiries"]) == ("open", 3, 3)
    assert all(n == 1 for n in retry_counts(db, ids).values())


def test_expired_probe_lease_is_a_failed_probe(db: Conn) -> None:
    trip(db, T0)
    probe = acquire(db, "w2", at(60), timeout=30)
    assert len(probe) == 1
    # the probe hangs: its lease runs out at 90
    assert acquire(db, "w3", at(91)) == []
    cb = circuit(db)
    assert (cb["raw_state"], cb["trips"]) == ("open", 1)
    assert cb["open_until"] == at(91 + 120)
    # after the longer cool-down the hung item itself is taken over as the probe
    again = acquire(db, "w3", at(91 + 120))
    assert [r["id"] for r in again] == [probe[0]["id"]]
    assert again[0]["last_error_code"] == "lease_expired"
    assert circuit(db)["lease_expiries"] == 1


def test_released_probe_is_replaced(db: Conn) -> None:
    trip(db, T0)
    probe = acquire(db, "w2", at(60))
    released = db.execute(
        "SELECT release_retry_items(%s, 'w2') AS n", ([probe[0]["id"]],)
    ).fetchone()
    assert released == {"n": 1}
    again = acquire(db, "w3", at(61))
    assert len(again) == 1
    assert circuit(db)["probe_item_id"] == again[0]["id"]


def test_permanent_errors_do_not_count(db: Conn) -> None:
    ids = enqueue(db, 5)
    acquire(db, "w1", T0)
    for i in ids:
        assert fail(db, i, "w1", T0, retryable=False)
    rows = db.execute("SELECT * FROM daz_retry_queue_circuits").fetchall()
    assert rows == []


def test_success_ends_a_streak(db: Conn) -> None:
    ids = enqueue(db, 5)
    acquire(db, "w1", T0)
    fail(db, ids[0], "w1", T0)
    fail(db, ids[1], "w1", T0)
    assert circuit(db)["consecutive_failures"] == 2
    complete(db, ids[2], "w1", T0)
    assert circuit(db)["consecutive_failures"] == 0
    fail(db, ids[3], "w1", T0)
    fail(db, ids[4], "w1", T0)
    cb = circuit(db)
    assert (cb["state"], cb["consecutive_failures"]) == ("closed", 2)


def test_keys_are_independent(db: Conn) -> None:
    trip(db, T0)
    same_type_other_plugin = enqueue(db, 2, plugin="other")
    no_plugin = enqueue(db, 2, plugin=None)
    got = acquire(db, "w2", at(1))
    assert sorted(r["id"] for r in got) == sorted(same_type_other_plugin + no_plugin)
    for r in got:
        fail(db, r["id"], "w2", at(1))
    # two failures each: below the threshold of 3
    assert circuit(db, plugin="other")["state"] == "closed"
    assert circuit(db, plugin=None)["state"] == "closed"


def test_forced_open_holds_until_closed(db: Conn) -> None:
    ids = enqueue(db, 2, event_type="mail.send", plugin=None)
    db.execute("SELECT retry_circuit_open('mail.send')")
    cb = circuit(db, "mail.send", None)
    assert (cb["state"], cb["forced"]) == ("open", True)
    # no probe, ever: a year later the items still wait, budget intact
    assert acquire(db, "w1", at(365 * 86400)) == []
    assert retry_counts(db, ids) == {i: 0 for i in ids}
    closed = db.execute("SELECT retry_circuit_close('mail.send', NULL) AS ok").fetchone()
    assert closed == {"ok": True}
    assert circuit(db, "mail.send", None)["state"] == "closed"
    assert sorted(r["id"] for r in acquire(db, "w1", at(1))) == ids


def test_forced_open_ignores_successes_of_items_in_flight(db: Conn) -> None:
    ids = enqueue(db, 2)
    acquire(db, "w1", T0)
    db.execute("SELECT retry_circuit_open('http.call', 'web')")
    complete(db, ids[0], "w1", at(1))
    assert circuit(db)["state"] == "open"


def test_timed_open_probes_after_its_time(db: Conn) -> None:
    enqueue(db, 2)
    db.execute("SELECT retry_circuit_open('http.call', 'web', p_seconds => 30, p_now => %s)", (T0,))
    assert acquire(db, "w1", at(29)) == []
    assert len(acquire(db, "w1", at(30))) == 1


def due_now(c: Conn) -> dict[str, Any]:
    """retry_queue_due on the server's clock (it takes no p_now)."""
    row = c.execute("SELECT * FROM retry_queue_due()").fetchone()
    assert row is not None
    return row


def enqueue_now(c: Conn, n: int, event_type: str = "http.call",
                plugin: str | None = "web") -> list[int]:
    item = {"event_type": event_type, "event_data": {}, "plugin_name": plugin}
    rows = c.execute("SELECT id FROM enqueue_retry_items(%s)", (Jsonb([item] * n),)).fetchall()
    return [r["id"] for r in rows]


def test_due_waits_out_a_circuits_cooldown(db: Conn) -> None:
    """Items of an open circuit were due at once, so workers polled every
    10 ms through an outage: they are due when the cool-down ends."""
    enqueue_now(db, 3)
    db.execute("SELECT retry_circuit_open('http.call', 'web', p_seconds => 120)")
    row = due_now(db)
    assert row["active"] is True
    assert 115 < row["seconds_until_due"] <= 120, row
    assert row["oldest_due_age_seconds"] == 0  # held back, not a shortage of workers
    # an item scheduled after the cool-down: its own time
    db.execute("UPDATE daz_retry_queue SET next_retry_at = now() + interval '500 seconds'")
    assert 495 < due_now(db)["seconds_until_due"] <= 500
    # another key is due as before
    enqueue_now(db, 1, event_type="mail.send", plugin=None)
    assert due_now(db)["seconds_until_due"] <= 0


def test_items_of_a_forced_open_circuit_are_never_due(db: Conn) -> None:
    enqueue_now(db, 2, event_type="mail.send", plugin=None)
    db.execute("SELECT retry_circuit_open('mail.send')")
    row = due_now(db)
    assert (row["active"], row["seconds_until_due"], row["oldest_due_age_seconds"]) == (
        True, None, 0
    )
    db.execute("SELECT retry_circuit_close('mail.send', NULL)")
    assert due_now(db)["seconds_until_due"] <= 0


def test_due_with_the_probe_out_is_when_the_probes_lease_ends(db: Conn) -> None:
    enqueue_now(db, 3)
    # opened 61 s ago for 60 s: its probe is due now, and only it
    db.execute(
        "SELECT retry_circuit_open('http.call', 'web', p_seconds => 60,"
        " p_now => now() - interval '61 seconds')"
    )
    assert due_now(db)["seconds_until_due"] <= 0
    assert len(db.execute("SELECT * FROM acquire_retry_items('w1', 10, 30)").fetchall()) == 1
    assert circuit(db)["raw_state"] == "half_open"
    # the other two wait for the probe: at the latest until its lease ends
    assert 25 < due_now(db)["seconds_until_due"] <= 30


def test_forced_close_of_a_tripped_circuit(db: Conn) -> None:
    trip(db, T0)
    db.execute("SELECT retry_circuit_close('http.call', 'web', %s)", (at(5),))
    assert len(acquire(db, "w2", at(5))) == 3
    assert db.execute("SELECT retry_circuit_close('nope') AS ok").fetchone() == {"ok": False}


def test_per_key_settings_and_threshold_zero(db: Conn) -> None:
    db.execute("SELECT retry_circuit_configure('http.call', 'web', p_failure_threshold => 0)")
    ids = enqueue(db, 10)
    acquire(db, "w1", T0)
    for i in ids:
        fail(db, i, "w1", T0)
    cb = circuit(db)
    assert (cb["state"], cb["consecutive_failures"], cb["failure_threshold"]) == ("closed", 10, 0)
    db.execute(
        "SELECT retry_circuit_configure('http.call', 'web', p_failure_threshold => 1,"
        " p_cooldown_seconds => 5)"
    )
    got = acquire(db, "w1", at(1))
    fail(db, got[0]["id"], "w1", at(1))
    cb = circuit(db)
    assert (cb["state"], cb["open_until"], cb["cooldown_seconds"]) == ("open", at(6), 5)
    db.execute("SELECT retry_circuit_configure('http.call', 'web', p_reset => true)")
    cb = circuit(db)
    assert (cb["failure_threshold"], cb["cooldown_seconds"]) == (3, 60)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ("retry_circuit_open('')", "event_type"),
        ("retry_circuit_open('x', NULL, 0)", "seconds"),
        ("retry_circuit_close(NULL)", "event_type"),
        ("retry_circuit_configure('x', NULL, -1)", "failure_threshold"),
        ("retry_circuit_configure('x', NULL, NULL, 0)", "cooldown_seconds"),
        ("retry_circuit_configure('x', NULL, NULL, NULL, -5)", "max_cooldown_seconds"),
        ("retry_circuit_configure(NULL, 'p')", "event_type"),
        ("retry_circuit_configure(NULL, NULL, NULL, 900, 60)", "max_cooldown_seconds"),
        ("retry_circuit_configure(NULL, NULL, p_reset => true)", "reset"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(db: Conn, call: str, field: str) -> None:
    before = db.execute("SELECT * FROM _retryq_circuit_defaults").fetchone()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"invalid {field}"):
        db.execute(f"SELECT {call}")
    assert db.execute("SELECT * FROM _retryq_circuit").fetchall() == []
    assert db.execute("SELECT * FROM _retryq_circuit_defaults").fetchone() == before


def test_no_circuit_rows_while_everything_succeeds(db: Conn) -> None:
    ids = enqueue(db, 50)
    got = acquire(db, "w1", T0)
    n = db.execute(
        "SELECT complete_retry_items(%s, 'w1', %s) AS n", ([r["id"] for r in got], T0)
    ).fetchone()
    assert n == {"n": len(ids)}
    assert db.execute("SELECT count(*) AS n FROM _retryq_circuit").fetchone() == {"n": 0}




def test_batched_outcomes_in_crossed_order_never_wait_on_each_other(module_dsn: str,
                                                                   db: Conn) -> None:
    """Two workers write their outcomes in one transaction each, touching two
    failing keys in opposite orders. Each waits only for the first circuit row
    it touches; the second, held by the other, is skipped: no lock wait, so no
    deadlock. The price: those two successes do not reset their streaks."""
    k1 = enqueue(db, 5, event_type="k1")
    k2 = enqueue(db, 5, event_type="k2")
    acquire(db, "w", T0)
    fail(db, k1[0], "w", T0)  # both keys get a streak of 1
    fail(db, k2[0], "w", T0)
    with psycopg.connect(module_dsn) as t1, psycopg.connect(module_dsn) as t2:
        for t in (t1, t2):
            t.execute("SET lock_timeout = '2s'")  # a wait fails the test instead of hanging it
        t1.execute("SELECT fail_retry_item(%s, 'w', 'x', p_now => %s)", (k1[1], T0))  # holds k1
        t2.execute("SELECT fail_retry_item(%s, 'w', 'x', p_now => %s)", (k2[1], T0))  # holds k2
        done1 = t1.execute("SELECT complete_retry_item(%s, 'w', %s)", (k2[2], T0)).fetchone()
        done2 = t2.execute("SELECT complete_retry_item(%s, 'w', %s)", (k1[2], T0)).fetchone()
        t1.commit()
        t2.commit()
    assert (done1, done2) == ((True,), (True,))
    assert circuit(db, "k1", "web")["consecutive_failures"] == 2
    assert circuit(db, "k2", "web")["consecutive_failures"] == 2
    # successes first, then failures, crossed again
    with psycopg.connect(module_dsn) as t1, psycopg.connect(module_dsn) as t2:
        for t in (t1, t2):
            t.execute("SET lock_timeout = '2s'")
        t1.execute("SELECT complete_retry_item(%s, 'w', %s)", (k2[3], T0))  # resets, holds k2
        t2.execute("SELECT complete_retry_item(%s, 'w', %s)", (k1[3], T0))  # resets, holds k1
        f1 = t1.execute("SELECT fail_retry_item(%s, 'w', 'x', p_now => %s)", (k1[4], T0))
        f2 = t2.execute("SELECT fail_retry_item(%s, 'w', 'x', p_now => %s)", (k2[4], T0))
        assert (f1.fetchone(), f2.fetchone()) == ((True,), (True,))
        t1.commit()
        t2.commit()
    assert circuit(db, "k1", "web")["consecutive_failures"] == 0
    assert circuit(db, "k2", "web")["consecutive_failures"] == 0


class CliResult:
    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code, self.output = exit_code, output


def test_retryq_circuits_cli(module_dsn: str, db: Conn, capsys: pytest.CaptureFixture[str]) -> None:
    from retryq_py.cli import main

    def cli(*args: str) -> CliResult:
        try:
            main(["circuits", *args, "--database", module_dsn])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return CliResult(code, out.out + out.err)

    r = cli("open", "sql.exec.failed", "--plugin", "sql")
    assert r.exit_code == 0, r.output
    assert circuit(db, "sql.exec.failed", "sql")["forced"] is True
    r = cli("list")
    assert r.exit_code == 0 and "sql.exec.failed" in r.output and "open (forced)" in r.output
    r = cli("set-threshold", "7", "--event-type", "sql.exec.failed", "--plugin", "sql",
            "--cooldown", "12")
    assert r.exit_code == 0, r.output
    cb = circuit(db, "sql.exec.failed", "sql")
    assert (cb["failure_threshold"], cb["cooldown_seconds"]) == (7, 12)
    assert cli("set-threshold", "4", "--default").exit_code == 0
    defaults = db.execute("SELECT failure_threshold FROM _retryq_circuit_defaults").fetchone()
    assert defaults == {"failure_threshold": 4}
    assert cli("close", "sql.exec.failed", "--plugin", "sql").exit_code == 0
    assert circuit(db, "sql.exec.failed", "sql")["state"] == "closed"
    # no such circuit: a failure; neither or both of --event-type/--default: bad usage
    assert cli("close", "nope").exit_code == 1
    assert cli("set-threshold", "3").exit_code == 2
    assert cli("set-threshold", "3", "--default", "--event-type", "x").exit_code == 2
    assert cli("open", "x", "--seconds", "0").exit_code == 2  # 22023 from the SQL


def test_concurrent_acquires_hand_out_one_probe(module_dsn: str, db: Conn) -> None:
    """Eight workers acquire at the same instant after the cool-down: exactly one
    probe item of the tripped key leaves, whatever the interleaving."""
    import threading

    trip(db, T0)
    enqueue(db, 30)
    other = enqueue(db, 40, event_type="mail.send", plugin="smtp")
    barrier = threading.Barrier(8)
    got: list[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with psycopg.connect(module_dsn, autocommit=True, row_factory=dict_row) as c:
            barrier.wait(timeout=10)
            rows = acquire(c, f"w{n}", at(60), batch=10)
        with lock:
            got.append(rows)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    rows = [r for batch in got for r in batch]
    assert len(got) == 8
    probes = [r for r in rows if r["event_type"] == "http.call"]
    assert len(probes) == 1, probes
    assert circuit(db)["probe_item_id"] == probes[0]["id"]
    assert sorted(r["id"] for r in rows if r["event_type"] == "mail.send") == other


# --- a model of the circuits against the real functions -----------------------

KEYS = [("a.call", "p"), ("b.call", None)]
THRESHOLD, COOLDOWN, MAX_COOLDOWN = 2, 10.0, 25.0


class CircuitModel(RuleBasedStateMachine):
    """Random acquires, completes, failures, forced opens/closes and clock moves
    on two keys; after every step the circuits in the table equal the model's,
    and acquire never hands out an item its circuit holds back."""

    def __init__(self, conn: Conn) -> None:
        super().__init__()
        self.db = conn
        self.now = T0
        self.held: dict[int, int] = {}  # item id -> key index
        self.model = [self._closed() for _ in KEYS]

    @staticmethod
    def _closed() -> dict[str, Any]:
        return {"state": "closed", "failures": 0, "trips": 0, "open_until": None,
                "probe": None, "forced": False}

    @initialize()
    def setup(self) -> None:
        self.db.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive, _retryq_circuit")
        self.db.execute(
            "SELECT retry_circuit_configure(NULL, NULL, %s, %s, %s)",
            (THRESHOLD, COOLDOWN, MAX_COOLDOWN),
        )
        for event_type, plugin in KEYS:
            enqueue(self.db, 150, event_type=event_type, plugin=plugin, max_retries=1000)

    def _open(self, m: dict[str, Any], trips: int) -> None:
        m.update(state="open", trips=trips, probe=None,
                 open_until=self.now + timedelta(
                     seconds=min(COOLDOWN * 2**trips, MAX_COOLDOWN)))

    def _ready(self, m: dict[str, Any]) -> bool:
        if m["state"] == "closed" or m["forced"] or m["probe"] in self.held:
            return False
        return m["state"] == "half_open" or m["open_until"] <= self.now

    @rule(seconds=st.sampled_from([1, 5, 10, 20, 45]))
    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def acquire(self) -> None:
        ready = [self._ready(m) for m in self.model]
        rows = acquire(self.db, "w", self.now, batch=8, timeout=86400)
        per_key = [0] * len(KEYS)
        for r in rows:
            k = [e for e, _ in KEYS].index(r["event_type"])
            per_key[k] += 1
            self.held[r["id"]] = k
            if ready[k]:
                self.model[k].update(state="half_open", probe=r["id"], open_until=None)
        for k, m in enumerate(self.model):
            if ready[k]:
                assert per_key[k] == 1, (k, m, per_key)
            elif m["state"] != "closed":
                assert per_key[k] == 0, (k, m, per_key)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), ok=st.booleans())
    def outcome(self, data: st.DataObject, ok: bool) -> None:
        item = data.draw(st.sampled_from(sorted(self.held)))
        k = self.held.pop(item)
        m = self.model[k]
        if ok:
            assert complete(self.db, item, "w", self.now)
            if not m["forced"] and (m["state"] != "closed" or m["failures"] > 0):
                self.model[k] = self._closed()
            return
        assert fail(self.db, item, "w", self.now)
        m["failures"] += 1
        if m["forced"]:
            return
        if m["state"] == "half_open" or (
            m["state"] == "open" and m["open_until"] <= self.now
        ):
            self._open(m, m["trips"] + 1)
        elif m["state"] == "closed" and m["failures"] >= THRESHOLD:
            self._open(m, 0)

    @rule(k=st.sampled_from(range(len(KEYS))), open_=st.booleans())
    def operator(self, k: int, open_: bool) -> None:
        event_type, plugin = KEYS[k]
        if open_:
            self.db.execute("SELECT retry_circuit_open(%s, %s)", (event_type, plugin))
            self.model[k].update(state="open", forced=True, open_until=None, probe=None)
        else:
            self.db.execute("SELECT retry_circuit_close(%s, %s)", (event_type, plugin))
            if self.db.execute(
                "SELECT 1 FROM _retryq_circuit WHERE event_type = %s", (event_type,)
            ).fetchone():
                self.model[k] = self._closed()

    @invariant()
    def circuits_match(self) -> None:
        rows = {
            r["event_type"]: r
            for r in self.db.execute("SELECT * FROM _retryq_circuit").fetchall()
        }
        for (event_type, _), m in zip(KEYS, self.model, strict=True):
            r = rows.get(event_type)
            if r is None:
                assert m == self._closed()
                continue
            got = (r["state"], r["consecutive_failures"], r["trips"], r["open_until"],
                   r["forced"])
            want = (m["state"], m["failures"], m["trips"], m["open_until"], m["forced"])
            assert got == want, (event_type, got, want)
            if m["state"] == "half_open":
                assert r["probe_id"] == m["probe"]


def test_circuits_follow_the_model(db: Conn) -> None:
    run_state_machine_as_test(lambda: CircuitModel(db))
