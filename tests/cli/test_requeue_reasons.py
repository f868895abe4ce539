"""A requeue that leaves a dead letter as it was says which and why
(requeue_dead_letter_items_report, retryq dead-letter requeue): its dedupe
key or event id held by a live item (or by a newer dead letter requeued with
it), its row held by another transaction, not a dead letter, excluded by the
other filters, or no such item; `retryq dead-letter requeue` exits 1 when
none of what it was asked for was requeued. It printed "requeued 0" (exit 0)
with no reason, and the dashboard said "not a dead letter"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from retryq_py import RetryQueue
from retryq_py import admin as cmd
from retryq_py.cli.main import main


@pytest.fixture
def mix(module_dsn: str, module_reset: str) -> Iterator[dict[str, int]]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(module_reset)
        q = RetryQueue(conn)
        ids: dict[str, int] = {}
        ids["key_dead"] = _dead(q, conn, "rq", dedupe_key="k")
        ids["key_live"] = q.add("rq", {}, dedupe_key="k").id
        ids["event_dead"] = _dead(q, conn, "rq")
        row = conn.execute(
            "INSERT INTO daz_retry_queue (event_type, event_data, event_id)"
            " SELECT 'rq', '{}', event_id FROM daz_retry_queue WHERE id = %s RETURNING id",
            (ids["event_dead"],),
        ).fetchone()
        assert row is not None
        ids["event_live"] = row[0]
        ids["older"] = _dead(q, conn, "rq", dedupe_key="k2")
        ids["newer"] = _dead(q, conn, "rq", dedupe_key="k2")
        ids["other_type"] = _dead(q, conn, "zz")
        yield ids


def _dead(q: RetryQueue, conn: Any, event_type: str, **options: Any) -> int:
    item_id = q.add(event_type, {}, max_retries=0, **options).id
    for leased in q.acquire("t-worker", 100):
        if leased.id == item_id:
            assert q.fail(item_id, "t-worker", "boom", "c", retryable=False)
        else:
            q.release([leased.id], "t-worker")
    return item_id


def test_the_report_says_what_became_of_each(module_dsn: str, mix: dict[str, int]) -> None:
    given = [mix[k] for k in ("key_dead", "event_dead", "older", "newer", "key_live")]
    given += [mix["other_type"], 999_999]
    done = cmd.dead_letter_requeue_report(
        cmd.target(module_dsn), cmd.DeadLetterFilter(ids=tuple(given), event_type="rq")
    )
    got = {o.item_id: (o.outcome, o.held_by, o.item_status) for o in done.outcomes}
    assert got == {
        mix["key_dead"]: ("dedupe_key_held", mix["key_live"], "dead_letter"),
        mix["event_dead"]: ("event_id_held", mix["event_live"], "dead_letter"),
        mix["older"]: ("dedupe_key_held", mix["newer"], "dead_letter"),
        mix["newer"]: ("requeued", None, "pending"),
        mix["key_live"]: ("not_dead_letter", None, "pending"),
        mix["other_type"]: ("filtered_out", None, "dead_letter"),
        999_999: ("not_found", None, None),
    }
    assert [o.item_id for o in done.outcomes] == sorted(got)
    assert done.requeued == 1
    why = {o.item_id: done.why(o) for o in done.skipped}
    assert (
        why[mix["key_dead"]]
        == f"left a dead letter: its dedupe key is held by live item {mix['key_live']}"
    )
    assert (
        why[mix["event_dead"]]
        == f"left a dead letter: its event id is held by live item {mix['event_live']}"
    )
    assert (
        why[mix["older"]]
        == f"left a dead letter: its dedupe key is held by item {mix['newer']}, requeued now"
    )


def test_a_row_another_transaction_holds_is_busy(module_dsn: str, mix: dict[str, int]) -> None:
    with psycopg.connect(module_dsn) as other:
        other.execute(
            "SELECT 1 FROM _retryq_finished WHERE id = %s FOR UPDATE", (mix["other_type"],)
        )
        done = cmd.dead_letter_requeue_report(
            cmd.target(module_dsn), cmd.DeadLetterFilter(ids=(mix["other_type"],))
        )
        other.rollback()
    assert [(o.outcome, o.item_status) for o in done.outcomes] == [("busy", "dead_letter")]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_names_each_skipped_one_and_fails_when_none_was_requeued(
    module_dsn: str,
    mix: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RETRYQ_DATABASE_URL", module_dsn)
    monkeypatch.delenv("RETRYQ_DEBUG", raising=False)
    requeue = ["dead-letter", "requeue"]
    code, out, err = run(
        [*requeue, "--id", str(mix["key_dead"]), "--id", str(mix["event_dead"])], capsys
    )
    assert code == 1, (out, err)
    held = "left a dead letter: its {} is held by {}"
    assert (
        f"id {mix['key_dead']}: " + held.format("dedupe key", f"live item {mix['key_live']}") in out
    )
    assert (
        f"id {mix['event_dead']}: " + held.format("event id", f"live item {mix['event_live']}")
        in out
    )
    assert "requeued 0 of 2" in out
    assert err.startswith("retryq: nothing requeued") and len(err.splitlines()) == 1
    # some requeued: exit 0, the rest named
    code, out, err = run([*requeue, "--id", str(mix["older"]), "--id", str(mix["newer"])], capsys)
    assert code == 0, (out, err)
    assert (
        f"id {mix['older']}: " + held.format("dedupe key", f"item {mix['newer']}, requeued now")
        in out
    )
    assert "requeued 1 of 2" in out and err == ""
    # nothing to do is no failure, as `retryq cancel` has it
    code, out, err = run([*requeue, "--error-code", "nothing-has-this"], capsys)
    assert (code, out, err) == (0, "requeued 0: no dead letter matches\n", "")
    code, out, _ = run([*requeue, "--id", "999999"], capsys)
    assert code == 1 and "id 999999: no such item" in out
