"""Rate limits in SQL (issue 14, item 6): at most N leases of a key per period,
across all connections, counted at lease time by acquire_retry_items.

The clock moves through the owner's p_now; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
Conn = psycopg.Connection[Any]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def db(module_dsn: str, module_reset: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
        yield c


def enqueue(
    c: Conn,
    n: int,
    event_type: str = "sms.send",
    plugin: str | None = "twilio",
    priority: int = 5,
    now: datetime = T0,
) -> list[int]:
    item = {
        "event_type": event_type,
        "event_data": {},
        "plugin_name": plugin,
        "retry_delay_seconds": 0,
        "priority": priority,
        "max_retries": 3,
    }
    rows = c.execute(
        "SELECT id FROM enqueue_retry_items(%s, %s)", (Jsonb([item] * n), now)
    ).fetchall()
    return [r["id"] for r in rows]


def acquire(
    c: Conn, now: datetime, batch: int = 100, worker: str = "w1", timeout: int = 300
) -> list[dict[str, Any]]:
    return c.execute(
        "SELECT * FROM acquire_retry_items(%s, %s, %s, %s)", (worker, batch, timeout, now)
    ).fetchall()


def keys(rows: list[dict[str, Any]]) -> list[str]:
    return [r["event_type"] for r in rows]


def test_at_most_n_leases_in_any_window_of_one_period(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 3, 10)")
    enqueue(db, 20)
    assert len(acquire(db, at(0), batch=2)) == 2
    assert len(acquire(db, at(4), batch=5)) == 1  # the third token
    assert acquire(db, at(9.999)) == []  # every token used within 10 s
    # a token frees exactly one period after its use: the two of t=0 at t=10
    assert len(acquire(db, at(10))) == 2
    assert acquire(db, at(13.999)) == []
    assert len(acquire(db, at(14))) == 1
    # the lease times: no window of 10 s holds more than 3
    times = sorted(
        r["last_attempted_at"]
        for r in db.execute(
            "SELECT last_attempted_at FROM daz_retry_queue WHERE last_attempted_at IS NOT NULL"
        ).fetchall()
    )
    assert len(times) == 6
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + timedelta(seconds=10)) <= 3


def test_other_keys_flow_past_an_exhausted_limit(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 2, 60)")
    enqueue(db, 10, priority=9)  # limited, more urgent, first in line
    enqueue(db, 3, event_type="sms.send", plugin=None)  # another key: no limit
    enqueue(db, 4, event_type="email.send", plugin="smtp", priority=1)
    got = acquire(db, at(1), batch=100)
    assert sorted(keys(got)) == ["email.send"] * 4 + ["sms.send"] * 5
    assert sum(r["plugin_name"] == "twilio" for r in got) == 2
    # behind the limited key's items, of the same priority: the limited key has
    # no token, so its items are passed over rather than fill the batch
    more = enqueue(db, 2, event_type="email.send", plugin="smtp", priority=9)
    assert sorted(r["id"] for r in acquire(db, at(2), batch=5)) == more


def test_a_takeover_counts_as_a_lease_and_a_burial_does_not(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 1, 100)")
    [item] = enqueue(db, 1)
    assert len(acquire(db, at(0), timeout=10)) == 1
    # the lease expired at 10 s, but its token is spent until 100 s
    assert acquire(db, at(50)) == []
    row = db.execute(
        "SELECT status, retry_count FROM daz_retry_queue WHERE id = %s", (item,)
    ).fetchone()
    assert row == {"status": "processing", "retry_count": 0}  # not counted as lost yet
    [taken] = acquire(db, at(100), timeout=10, worker="w2")
    assert taken["retry_count"] == 1
    # spent budget: the expired lease is buried without a token
    db.execute("UPDATE daz_retry_queue SET retry_count = max_retries WHERE id = %s", (item,))
    assert acquire(db, at(150)) == []
    assert db.execute("SELECT status FROM daz_retry_queue WHERE id = %s", (item,)).fetchone() == {
        "status": "dead_letter"
    }
    assert db.execute("SELECT used_at FROM _retryq_rate_token").fetchall() == [{"used_at": at(100)}]


def test_priorities_within_a_key_and_the_token_goes_to_the_most_urgent(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 1, 1)")
    enqueue(db, 3, priority=2)
    [urgent] = enqueue(db, 1, priority=8)
    assert [r["id"] for r in acquire(db, at(0))] == [urgent]


def test_two_connections_cannot_together_exceed_n(db: Conn, module_dsn: str) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 5, 60)")
    enqueue(db, 30)
    with (
        psycopg.connect(module_dsn, row_factory=dict_row) as a,
        psycopg.connect(module_dsn, row_factory=dict_row) as b,
    ):
        # a holds 3 tokens uncommitted; b takes what is left, without waiting
        assert len(acquire(a, at(1), batch=3, worker="a")) == 3
        b.execute("SET lock_timeout = '1s'")
        assert len(acquire(b, at(1), batch=10, worker="b")) == 2
        a.commit()
        b.commit()
        # b's later statement sees a's committed stamps: nothing free
        assert acquire(b, at(2), worker="b") == []
        b.commit()
    # a rolled-back lease gives its token back
    with psycopg.connect(module_dsn, row_factory=dict_row) as c:
        db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 6, 60)")
        assert len(acquire(c, at(3), worker="c")) == 1
        c.rollback()
    assert len(acquire(db, at(3), worker="d")) == 1


def test_changing_and_clearing_a_limit(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 2, 60)")
    enqueue(db, 10)
    assert len(acquire(db, at(0))) == 2
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 3, 60)")
    assert len(acquire(db, at(1))) == 1  # one new token
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 1, 60)")
    assert acquire(db, at(2)) == []
    assert acquire(db, at(59.9)) == []  # slot 1, used at 0, is the one left
    assert len(acquire(db, at(60.5))) == 1
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 1, 0.5)")
    assert len(acquire(db, at(61))) == 1
    view = db.execute("SELECT * FROM daz_retry_queue_rate_limits").fetchall()
    assert [
        (v["event_type"], v["plugin_name"], v["max_leases"], v["period_seconds"]) for v in view
    ] == [("sms.send", "twilio", 1, 0.5)]
    assert db.execute("SELECT retry_rate_limit_clear('sms.send', 'twilio') AS c").fetchone() == {
        "c": True
    }
    assert db.execute("SELECT retry_rate_limit_clear('sms.send', 'twilio') AS c").fetchone() == {
        "c": False
    }
    assert len(acquire(db, at(61.1))) == 5
    assert db.execute("SELECT count(*) AS n FROM _retryq_rate_token").fetchone() == {"n": 0}


def test_the_view_counts_the_last_period(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', NULL, 2, 3600)")
    enqueue(db, 5, plugin=None, now=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert len(acquire(db, datetime.now(timezone.utc), batch=1)) == 1
    [row] = db.execute("SELECT * FROM daz_retry_queue_rate_limits").fetchall()
    assert (
        row["plugin_name"],
        row["leases_in_period"],
        row["tokens_free"],
        row["next_token_at"],
    ) == (None, 1, 1, None)
    acquire(db, datetime.now(timezone.utc))
    [row] = db.execute("SELECT * FROM daz_retry_queue_rate_limits").fetchall()
    assert (row["leases_in_period"], row["tokens_free"]) == (2, 0)
    assert row["next_token_at"] > datetime.now(timezone.utc) + timedelta(seconds=3500)


def test_a_batch_is_not_under_filled_by_a_key_beyond_its_tokens(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 1, 60)")
    limited = enqueue(db, 3)  # one token free, three items first in line
    other = enqueue(db, 1, event_type="email.send", plugin="smtp")  # same priority, no limit
    got = [r["id"] for r in acquire(db, at(1), batch=3)]
    assert got == [limited[0], *other]  # the key beyond its token does not fill the batch


def test_a_limit_not_reached_skips_the_lookup_of_spent_keys(db: Conn) -> None:
    """The look for keys without a token free runs up front only when the
    session's last acquire found one (the hint retryq.rate_closed): with a
    limit configured but not reached, an acquire's extra cost is its tokens."""
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 3, 60)")
    enqueue(db, 10)
    assert len(acquire(db, at(0), batch=2)) == 2
    assert db.execute("SELECT current_setting('retryq.rate_closed', TRUE) AS h").fetchone() == {
        "h": "no"
    }
    # a key spent: the next acquire of this session learns it, and looks up front again
    assert len(acquire(db, at(1), batch=5)) == 1
    assert db.execute("SELECT current_setting('retryq.rate_closed', TRUE) AS h").fetchone() == {
        "h": "yes"
    }
    assert acquire(db, at(2)) == []
    # a token free again: the hint goes back to no
    assert len(acquire(db, at(60), batch=1)) == 1
    assert db.execute("SELECT current_setting('retryq.rate_closed', TRUE) AS h").fetchone() == {
        "h": "no"
    }


def token_rows(c: Conn) -> list[tuple[int, int, int]]:
    """The key's token rows as (slot, cap, used), by slot."""
    return [
        (r["slot"], r["cap"], r["used"])
        for r in c.execute(
            "SELECT slot, cap, used FROM _retryq_rate_token ORDER BY slot"
        ).fetchall()
    ]


def test_a_batch_writes_one_token_row_per_key_in_place(module_dsn: str, db: Conn) -> None:
    """A limit of N keeps least(N, 64) token rows; a grant adds a batch's
    leases to one row in one update, and that update is HOT: no index covers
    what it changes, so it adds no index entry."""
    indexes = db.execute(
        "SELECT indexrelid::regclass::text AS name FROM pg_index"
        " WHERE indrelid = '_retryq_rate_token'::regclass ORDER BY 1"
    ).fetchall()
    assert indexes == [{"name": "_retryq_rate_token_pkey"}]  # (event_type, plugin_name, slot)
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 1000, 60)")
    enqueue(db, 20)
    with psycopg.connect(module_dsn, row_factory=dict_row) as c:
        assert len(acquire(c, at(0), batch=10)) == 10
        counts = c.execute(
            "SELECT pg_stat_get_xact_tuples_updated(r) AS updated,"
            " pg_stat_get_xact_tuples_hot_updated(r) AS hot"
            " FROM CAST('_retryq_rate_token' AS regclass) AS r"
        ).fetchone()
        c.commit()
    assert counts == {"updated": 1, "hot": 1}
    rows = token_rows(db)
    assert len(rows) == 64 and rows[0] == (1, 16, 10) and rows[-1] == (64, 15, 0)
    assert sum(cap for _, cap, _ in rows) == 1000
    for n in (3, 5, 2, 70, 130, 64, 4):
        db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', %s, 60)", (n,))
        rows = token_rows(db)
        assert [slot for slot, _, _ in rows] == list(range(1, min(n, 64) + 1))
        assert sum(cap for _, cap, _ in rows) == n


def test_a_key_spent_by_another_session_does_not_fill_the_batch(db: Conn, module_dsn: str) -> None:
    """This session's hint says no key is spent, another session spends one:
    the scan that meets the spent key's items closes it and scans again, so
    the batch is filled with the other keys' items as if it had been closed
    up front."""
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 2, 60)")
    db.execute("SELECT retry_rate_limit_set('email.send', 'smtp', 100, 60)")
    enqueue(db, 1, event_type="email.send", plugin="smtp", priority=9)
    assert len(acquire(db, at(0), batch=1)) == 1  # the hint: no key spent
    assert db.execute("SELECT current_setting('retryq.rate_closed', TRUE) AS h").fetchone() == {
        "h": "no"
    }
    spent = enqueue(db, 2, priority=9)
    limited_first = enqueue(db, 5, priority=9, now=at(1))
    others = enqueue(db, 3, event_type="email.send", plugin="smtp", priority=9, now=at(2))
    with psycopg.connect(module_dsn, autocommit=True, row_factory=dict_row) as other:
        assert sorted(r["id"] for r in acquire(other, at(3), batch=2)) == spent
    got = acquire(db, at(4), batch=3)
    assert sorted(r["id"] for r in got) == others
    assert not set(limited_first) & {r["id"] for r in got}
    assert db.execute("SELECT current_setting('retryq.rate_closed', TRUE) AS h").fetchone() == {
        "h": "yes"
    }


def test_a_limit_lowered_and_raised_within_a_period_keeps_its_window(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 2, 60)")
    enqueue(db, 5)
    assert len(acquire(db, at(0))) == 2
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 1, 60)")
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 2, 60)")
    assert acquire(db, at(1)) == []  # the re-created token keeps its last use
    assert len(acquire(db, at(60))) == 2  # both free a period after their use


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", None, 1, 1.0), "event_type"),
        ((None, None, 1, 1.0), "event_type"),
        (("x", "p" * 1001, 1, 1.0), "plugin_name"),
        (("x", None, 0, 1.0), "max_leases"),
        (("x", None, None, 1.0), "max_leases"),
        (("x", None, 100001, 1.0), "max_leases"),
        (("x", None, 5, 0.0), "period_seconds"),
        (("x", None, 5, 0.0009), "period_seconds"),
        (("x", None, 5, float("nan")), "period_seconds"),
        (("x", None, 5, float("inf")), "period_seconds"),
        (("x", None, 5, 31536001.0), "period_seconds"),
    ],
)
def test_refusals_name_the_field(db: Conn, args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        db.execute("SELECT retry_rate_limit_set(%s, %s, %s, %s)", args)
    assert e.value.diag.column_name == field
    assert db.execute("SELECT count(*) AS n FROM _retryq_rate_limit").fetchone() == {"n": 0}


def test_retryq_rate_limits_cli(
    module_dsn: str, db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    from retryq_py.cli import main

    def cli(*args: str) -> tuple[int, str]:
        try:
            main(["rate-limits", *args, "--database", module_dsn])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out + out.err

    code, text = cli("set", "sms.send", "20", "--plugin", "twilio", "--per", "2")
    assert code == 0, text
    assert "20 per 2s" in text
    assert db.execute(
        "SELECT max_leases, period_seconds FROM daz_retry_queue_rate_limits"
    ).fetchall() == [{"max_leases": 20, "period_seconds": 2.0}]
    code, text = cli("list")
    assert code == 0 and "sms.send" in text and "20/2s" in text, text
    assert "1 rate limit(s), 0 at their limit now" in text
    code, text = cli("set", "sms.send", "0")
    assert code == 2 and "max_leases" in text, text  # 22023 from the SQL
    code, text = cli("clear", "sms.send", "--plugin", "twilio")
    assert code == 0, text
    assert cli("clear", "sms.send", "--plugin", "twilio")[0] == 1  # no such limit
    assert cli()[1].strip().endswith("0 rate limit(s), 0 at their limit now")


def due(c: Conn, *routing: Any) -> dict[str, Any]:
    row = c.execute("SELECT * FROM retry_queue_due(%s, %s)", (routing or (None, None))).fetchone()
    assert row is not None
    return row


def test_due_waits_for_the_next_token_of_a_spent_limit(db: Conn) -> None:
    # the server's clock runs; the tokens are used in the past through p_now
    now = db.execute("SELECT now() AS t").fetchone()["t"]  # type: ignore[index]
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 2, 3600)")
    enqueue(db, 5, now=now - timedelta(seconds=4000))
    assert len(acquire(db, now - timedelta(seconds=3500), batch=1)) == 1
    assert len(acquire(db, now - timedelta(seconds=3000), batch=1)) == 1
    # both tokens in use: the first frees at +100 s, and nothing is due before
    row = due(db)
    assert row["active"] is True
    assert 95 < row["seconds_until_due"] <= 100
    assert row["oldest_due_age_seconds"] == 0
    # an item of the key scheduled later than the token frees: its own time
    db.execute(
        "UPDATE daz_retry_queue SET next_retry_at = %s WHERE status = 'pending'",
        (now + timedelta(seconds=500),),
    )
    assert 495 < due(db)["seconds_until_due"] <= 500
    # another key without a limit is due as before (overdue here) ...
    [other] = enqueue(
        db, 1, event_type="email.send", plugin="smtp", now=now - timedelta(seconds=60)
    )
    row = due(db)
    assert row["seconds_until_due"] < -55 and row["oldest_due_age_seconds"] > 55
    # ... and routed to the limited key only, the token's time again
    assert 495 < due(db, ["sms.send"], None)["seconds_until_due"] <= 500
    db.execute("DELETE FROM daz_retry_queue WHERE id = %s", (other,))
    # a spent lease of the key is buried without a token: still due
    db.execute(
        "UPDATE daz_retry_queue SET retry_count = max_retries, locked_until = %s "
        "WHERE status = 'processing'",
        (now - timedelta(seconds=1),),
    )
    assert due(db)["oldest_due_age_seconds"] > 0
    # with the limit cleared, the key is due at its own time again
    db.execute("SELECT retry_rate_limit_clear('sms.send', 'twilio')")
    db.execute(
        "UPDATE daz_retry_queue SET next_retry_at = %s WHERE status = 'pending'",
        (now - timedelta(seconds=10),),
    )
    assert due(db)["seconds_until_due"] < -5


def test_due_with_a_token_free_is_unchanged(db: Conn) -> None:
    now = db.execute("SELECT now() AS t").fetchone()["t"]  # type: ignore[index]
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 2, 3600)")
    enqueue(db, 3, now=now - timedelta(seconds=60))
    assert len(acquire(db, now - timedelta(seconds=30), batch=1)) == 1
    row = due(db)  # one token left: the items are due (overdue)
    assert row["seconds_until_due"] < -55 and row["oldest_due_age_seconds"] > 55


def lease_times(c: Conn) -> list[datetime]:
    return sorted(
        r["last_attempted_at"]
        for r in c.execute(
            "SELECT last_attempted_at FROM daz_retry_queue WHERE last_attempted_at IS NOT NULL"
        ).fetchall()
    )


def busiest_window(times: list[datetime], period: timedelta) -> int:
    return max(
        (sum(1 for u in times[i:] if u < t + period) for i, t in enumerate(times)), default=0
    )


def test_rows_of_several_tokens_keep_the_window_and_the_rate(db: Conn) -> None:
    """130 per 10 s: 64 rows, two of 3 tokens and 62 of 2. Batches of every
    size, every half second for 40 s, with more due than the limit allows:
    no window of 10 s holds more than 130 leases, and the limit is used (a
    row is free again a period after its last lease: at most its cap - 1
    leases a period lost per row)."""
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 130, 10)")
    enqueue(db, 700)
    sizes = [7, 13, 1, 50, 2, 3, 30, 5]
    for step in range(80):
        acquire(db, at(step / 2), batch=sizes[step % len(sizes)])
    times = lease_times(db)
    assert busiest_window(times, timedelta(seconds=10)) == 130
    assert len(times) >= 0.9 * 130 * 4, len(times)


def test_a_batch_beyond_a_rows_room_takes_the_next_rows(db: Conn, module_dsn: str) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 130, 60)")
    enqueue(db, 20)
    assert len(acquire(db, at(0), batch=2)) == 2  # row 1: 2 of 3
    assert len(acquire(db, at(1), batch=4)) == 4  # row 1's last, then row 2's 3
    assert token_rows(db)[:3] == [(1, 3, 3), (2, 3, 3), (3, 2, 0)]
    # a row another transaction holds is skipped, never waited for
    with (
        psycopg.connect(module_dsn, row_factory=dict_row) as a,
        psycopg.connect(module_dsn, row_factory=dict_row) as b,
    ):
        assert len(acquire(a, at(2), batch=1, worker="a")) == 1  # row 3, uncommitted
        b.execute("SET lock_timeout = '1s'")
        assert len(acquire(b, at(2), batch=3, worker="b")) == 3  # rows 4 and 5
        a.commit()
        b.commit()
    assert token_rows(db)[:5] == [(1, 3, 3), (2, 3, 3), (3, 2, 1), (4, 2, 2), (5, 2, 1)]


def test_a_lease_with_an_earlier_clock_does_not_join_a_later_use(db: Conn) -> None:
    """Two acquires whose clocks cross: one starts a row's new use at 10 s
    (its last use at 0 s), the other, at 9.9 s, must not add to that use, or
    the window [0 s, 10 s) would hold the old use and this lease too."""
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 65, 10)")  # row 1: 2 tokens
    enqueue(db, 100)
    assert len(acquire(db, at(0), batch=100)) == 65
    assert len(acquire(db, at(10), batch=1)) == 1  # row 1 starts again: room for one more
    assert acquire(db, at(9.9), batch=1) == []
    assert busiest_window(lease_times(db), timedelta(seconds=10)) == 65
    assert len(acquire(db, at(10), batch=1)) == 1


def test_a_limit_above_64_lowered_and_raised_keeps_its_window(db: Conn) -> None:
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 130, 60)")
    enqueue(db, 400)
    assert len(acquire(db, at(0), batch=200)) == 130
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 10, 60)")
    db.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', 200, 60)")
    # the 10 rows kept have the room of their larger caps (4 or 3 tokens, of
    # which 3 or 2 used at 0 s); the 54 re-created are full until 60 s
    assert len(acquire(db, at(30), batch=200)) == 16
    assert len(acquire(db, at(60), batch=300)) == 54 * 3
    assert busiest_window(lease_times(db), timedelta(seconds=60)) == 16 + 54 * 3
