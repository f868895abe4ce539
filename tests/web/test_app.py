"""The dashboard over HTTP (Starlette's TestClient): what each screen shows
of a queue holding items in every state, what each action leaves in the
database, and who may look or act."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from datetime import timezone
from pathlib import Path

import psycopg
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from retryq_py import RetryQueue
from retryq_py.admin import UsageProblem
from retryq_py.web import check_listen, create_app, web_config
from tests.web.conftest import Seeded, status_of

RETRYQ = Path(sys.executable).with_name("retryq")


def client(dsn: str, **options: object) -> TestClient:
    return TestClient(create_app(web_config(dsn, **options)))  # type: ignore[arg-type]


def ids_shown(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="status-\w+" data-id="(\d+)"', html)]


def text_of(html: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert m, element_id
    return " ".join(re.sub(r"<[^>]+>", " ", m.group(1)).split())


def test_every_screen_shows_the_queue(seeded: Seeded) -> None:
    c, ids = client(seeded.dsn), seeded.ids
    page = c.get("/").text
    # due, due2, scheduled, retried are pending; three dead letters; one held
    assert text_of(page, "count-pending") == "4"
    assert text_of(page, "count-processing") == "1"
    assert text_of(page, "count-dead_letter") == "3"
    assert text_of(page, "count-due") == "2"
    assert text_of(page, "count-scheduled") == "2"
    assert text_of(page, "total-completed") == "1"
    assert text_of(page, "total-failed") == "4"  # three dead letters and one retry
    assert text_of(page, "total-dead") == "3"
    assert f'href="/items/{ids["due"]}"' in page  # the oldest pending item
    assert "sms.send/- (open)" in page

    assert sorted(ids_shown(c.get("/items").text)) == sorted(ids.values())

    item = c.get(f"/items/{ids['due']}").text
    assert "ada@example.com" in item and "&lt;b&gt;hi&lt;/b&gt;" in item  # escaped
    assert "acme" in item and "req-1" in item
    assert "mail:bob" in c.get(f"/items/{ids['due2']}").text  # its dedupe key
    retried = c.get(f"/items/{ids['retried']}").text
    assert "connection reset" in retried and "worker-a" in retried and "timeout" in retried

    dead = c.get("/dead-letters").text
    for name in ("dead_sql", "dead_http", "dead_mail"):
        assert f'data-id="{ids[name]}"' in dead
        assert f"c-{name}" in dead  # the correlation id column is filled in

    circuits = c.get("/circuits").text
    assert 'data-key="sms.send/-"' in circuits and "circuit-open" in circuits

    workers = c.get("/workers").text
    rows = re.findall(r"<tr><td>(worker-\w)</td>.*?</tr>", workers, re.S)
    assert rows == ["worker-a", "worker-b"]  # a holds a lease now, b failed earlier


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("status=dead_letter", {"dead_sql", "dead_http", "dead_mail"}),
        ("status=pending&event_type=email.send", {"due", "due2"}),
        ("plugin=sql", {"dead_sql", "retried"}),
        ("error_code=timeout", {"retried"}),
        ("correlation_id=req-1", {"due"}),
        ("older_than=1h", set()),
    ],
)
def test_items_filter(seeded: Seeded, query: str, names: set[str]) -> None:
    shown = ids_shown(client(seeded.dsn).get(f"/items?{query}").text)
    assert set(shown) == {seeded.ids[n] for n in names}


def test_items_page_by_keyset(seeded: Seeded) -> None:
    c = client(seeded.dsn, page_size=2)
    seen: list[int] = []
    url: str | None = "/items?status="
    while url is not None:
        page = c.get(url).text
        seen += ids_shown(page)
        m = re.search(r'id="next-page" href="([^"]+)"', page)
        url = m.group(1).replace("&amp;", "&") if m else None
    assert seen == sorted(seeded.ids.values(), reverse=True)


def test_a_bad_filter_says_which(seeded: Seeded) -> None:
    r = client(seeded.dsn).get("/items?older_than=soon")
    assert r.status_code == 400 and "invalid older_than" in r.text
    assert client(seeded.dsn).get("/items/99999").status_code == 404


def test_purge_asks_then_deletes(seeded: Seeded) -> None:
    c, dead = client(seeded.dsn), seeded.ids["dead_sql"]
    asked = c.post("/dead-letters/confirm", data={"action": "purge", "event_type": "sql.exec"})
    assert "Purge 1 dead letter(s)?" in asked.text
    assert f'name="confirmed" value="{dead}"' in asked.text
    assert status_of(seeded.dsn, dead) == "dead_letter"  # asking deletes nothing
    # a confirmation of another set (the matches changed since) purges nothing
    stale = {"action": "purge", "event_type": "sql.exec", "confirmed": f"{dead} 424242"}
    assert "nothing purged" in c.post("/dead-letters/apply", data=stale).text
    assert status_of(seeded.dsn, dead) == "dead_letter"
    # and a purge without its confirmation is refused
    r = c.post("/dead-letters/apply", data={"action": "purge", "event_type": "sql.exec"})
    assert r.status_code == 400 and "confirmation" in r.text
    done = c.post("/dead-letters/apply", data={**stale, "confirmed": str(dead)})
    assert "purged 1" in done.text
    assert status_of(seeded.dsn, dead) is None
    assert status_of(seeded.dsn, seeded.ids["dead_http"]) == "dead_letter"


def test_purge_never_deletes_a_dead_letter_the_confirmation_did_not_show(
    seeded: Seeded,
) -> None:
    """One confirmed item leaves and another arrives: the count is the same,
    the set is not, and nothing is deleted."""
    c, dead = client(seeded.dsn), seeded.ids["dead_sql"]
    asked = c.post("/dead-letters/confirm", data={"action": "purge", "plugin": "sql"})
    assert f'name="confirmed" value="{dead}"' in asked.text
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        q = RetryQueue(conn)
        assert q.requeue_dead_letters([dead]) == 1
        unseen, _ = q.add("sql.exec", {"n": "unseen"}, plugin="sql", max_retries=0)
        leased = q.acquire("w-x", 20)
        assert unseen in [i.id for i in leased]
        assert q.fail(unseen, "w-x", "boom", "x", retryable=False)
    applied = {"action": "purge", "plugin": "sql", "confirmed": str(dead)}
    assert "nothing purged" in c.post("/dead-letters/apply", data=applied).text
    assert status_of(seeded.dsn, unseen) == "dead_letter"


def test_purge_and_requeue_need_a_filter(seeded: Seeded) -> None:
    r = client(seeded.dsn).post("/dead-letters/confirm", data={"action": "purge"})
    assert r.status_code == 400 and "needs a filter" in r.text


def test_requeue_by_filter_and_one(seeded: Seeded) -> None:
    c = client(seeded.dsn)
    r = c.post("/dead-letters/apply", data={"action": "requeue", "plugin": "http"})
    assert "requeued 1" in r.text
    assert status_of(seeded.dsn, seeded.ids["dead_http"]) == "pending"
    r = c.post(f"/items/{seeded.ids['dead_mail']}/requeue")
    assert "requeued 1" in r.text and 'id="item-status">pending' in r.text
    assert status_of(seeded.dsn, seeded.ids["dead_mail"]) == "pending"


def test_an_archived_dead_letter_has_its_page_and_listing(seeded: Seeded) -> None:
    """After cleanup archives the dead letters, /items/ID still shows one,
    marked archived with the time and without a requeue button, and the dead
    letters screen lists them with archived=1."""
    dead = seeded.ids["dead_http"]
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        conn.execute("SELECT cleanup_retry_queue(0)")
        (archived_at,) = conn.execute(
            "SELECT archived_at FROM daz_retry_queue_archive WHERE id = %s", (dead,)
        ).fetchone()
    c = client(seeded.dsn)
    r = c.get(f"/items/{dead}")
    assert r.status_code == 200
    assert 'id="item-status">dead_letter' in r.text and 'id="item-archived"' in r.text
    shown = f"{archived_at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}"
    assert text_of(r.text, "archived-at") == shown
    assert 'id="requeue-item"' not in r.text
    assert "webhook.post failed: http_500" in r.text
    assert 'id="item-archived"' not in c.get(f"/items/{seeded.ids['due']}").text
    assert c.get("/items/99999").status_code == 404

    def rows(html: str) -> list[int]:
        return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]

    assert rows(c.get("/dead-letters").text) == []
    listed = c.get("/dead-letters", params={"archived": "1", "plugin": "http"}).text
    assert rows(listed) == [dead]
    assert 'id="archived-hint"' in listed and "requeue-matching" not in listed


def test_a_requeue_left_undone_says_why(seeded: Seeded) -> None:
    """Red team: a dead letter whose dedupe key a live item holds stays a dead
    letter, and the item page said "not a dead letter"."""
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        q = RetryQueue(conn)
        dead = q.add("held.key", {"n": 1}, dedupe_key="k-held").id
        conn.execute(
            "UPDATE daz_retry_queue SET status = 'dead_letter', completed_at = now()"
            " WHERE id = %s",
            (dead,),
        )
        live = q.add("held.key", {"n": 2}, dedupe_key="k-held").id
    r = client(seeded.dsn).post(f"/items/{dead}/requeue")
    assert f"its dedupe key is held by live item {live}" in r.text
    assert status_of(seeded.dsn, dead) == "dead_letter"


def test_numbers_and_durations_beyond_range_are_a_400_naming_the_field(seeded: Seeded) -> None:
    """Red team: these were 500s (an OverflowError, a 42883 naming a function
    signature) or a 400 that did not name the field."""
    c = client(seeded.dsn)
    for url, field in (
        ("/items?older_than=99999999999d", "older_than"),
        ("/dead-letters?older_than=99999999999d", "older_than"),
        ("/workers?window=99999999999d", "window"),
        ("/dead-letters?ids=99999999999999999999", "ids"),
        ("/items?before=99999999999999999999", "before"),
    ):
        r = c.get(url)
        assert r.status_code == 400 and field in r.text, (url, r.status_code, r.text[:300])
    r = c.post(
        "/rate-limits/set", data={"event_type": "sms.send", "max_leases": "99999999999999999999"}
    )
    assert r.status_code == 400 and "max_leases" in r.text, r.text[:300]


def test_cancel_one_item_from_its_page(seeded: Seeded) -> None:
    c, ids = client(seeded.dsn), seeded.ids
    page = c.get(f"/items/{ids['processing']}").text
    assert 'id="cancel-item"' in page and "its outcome is dropped" in page
    assert 'id="cancel-item"' not in c.get(f"/items/{ids['completed']}").text
    r = c.post(f"/items/{ids['due']}/cancel")
    assert r.status_code == 400 and "needs its confirmation" in r.text
    assert status_of(seeded.dsn, ids["due"]) == "pending"
    for name in ("due", "processing"):
        r = c.post(f"/items/{ids[name]}/cancel", data={"confirm": "yes"})
        assert "cancelled" in r.text and 'id="item-status">cancelled' in r.text, name
        assert status_of(seeded.dsn, ids[name]) == "cancelled"
    r = c.post(f"/items/{ids['completed']}/cancel", data={"confirm": "yes"})
    assert "not cancelled: already completed" in r.text
    assert text_of(c.get("/").text, "count-cancelled") == "2"
    assert sorted(ids_shown(c.get("/items?status=cancelled").text)) == sorted(
        [ids["due"], ids["processing"]]
    )


def test_circuit_open_and_close(seeded: Seeded) -> None:
    c = client(seeded.dsn)

    def state() -> str:
        with psycopg.connect(seeded.dsn) as conn:
            row = conn.execute(
                "SELECT state FROM daz_retry_queue_circuits"
                " WHERE event_type = 'sql.exec' AND plugin_name = 'sql'"
            ).fetchone()
        assert row is not None
        return str(row[0])

    r = c.post("/circuits/open", data={"event_type": "sql.exec", "plugin": "sql", "seconds": "60"})
    assert "opened sql.exec/sql for 60s" in r.text and state() == "open"
    r = c.post("/circuits/close", data={"event_type": "sql.exec", "plugin": "sql"})
    assert "closed sql.exec/sql" in r.text and state() == "closed"
    assert c.post("/circuits/close", data={"event_type": "nope"}).status_code == 404


def test_pause_and_resume(seeded: Seeded) -> None:
    c = client(seeded.dsn)

    def pauses() -> list[tuple[object, ...]]:
        with psycopg.connect(seeded.dsn) as conn:
            return conn.execute(
                "SELECT event_type, plugin_name, reason FROM daz_retry_queue_pauses"
            ).fetchall()

    assert 'id="no-pauses"' in c.get("/pauses").text
    assert c.post("/pauses/pause", data={}).status_code == 400  # never the whole queue by accident
    r = c.post("/pauses/pause", data={"event_type": "sql.exec", "reason": "migration"})
    assert "paused sql.exec" in r.text and 'data-key="sql.exec/*"' in r.text
    assert pauses() == [("sql.exec", None, "migration")]
    r = c.post("/pauses/pause", data={"all": "yes"})
    assert "paused the whole queue" in r.text
    r = c.post("/pauses/resume", data={"event_type": "sql.exec"})
    assert "resumed sql.exec" in r.text
    r = c.post("/pauses/resume", data={})
    assert "resumed the whole queue" in r.text and pauses() == []
    assert c.post("/pauses/resume", data={"event_type": "sql.exec"}).status_code == 409
    assert c.post("/pauses/stop", data={}).status_code == 404


def test_pause_and_resume_the_items_without_a_plugin(seeded: Seeded) -> None:
    c = client(seeded.dsn)

    def pauses() -> list[tuple[object, ...]]:
        with psycopg.connect(seeded.dsn) as conn:
            return conn.execute(
                "SELECT event_type, plugin_name FROM daz_retry_queue_pauses ORDER BY 1, 2"
            ).fetchall()

    r = c.post("/pauses/pause", data={"event_type": "sql.exec", "no_plugin": "yes"})
    assert "paused sql.exec/no plugin" in r.text and 'data-key="sql.exec/-"' in r.text
    assert pauses() == [("sql.exec", "")]
    r = c.post("/pauses/pause", data={"event_type": "sql.exec"})
    assert "paused sql.exec" in r.text and pauses() == [("sql.exec", ""), ("sql.exec", None)]
    bad = c.post("/pauses/pause", data={"event_type": "x", "plugin": "p", "no_plugin": "yes"})
    assert bad.status_code == 400
    # each row's resume form carries its own key
    r = c.post("/pauses/resume", data={"event_type": "sql.exec", "no_plugin": "yes"})
    assert "resumed sql.exec/no plugin" in r.text and pauses() == [("sql.exec", None)]
    assert 'name="no_plugin"' in c.get("/pauses").text  # the pause form offers it
    r = c.post("/pauses/pause", data={"no_plugin": "yes"})
    assert "paused the items without a plugin" in r.text
    assert pauses() == [("sql.exec", None), (None, "")]


def test_rate_limit_set_and_clear(seeded: Seeded) -> None:
    c = client(seeded.dsn)

    def limits() -> list[tuple[object, ...]]:
        with psycopg.connect(seeded.dsn) as conn:
            return conn.execute(
                "SELECT event_type, plugin_name, max_leases, period_seconds"
                " FROM daz_retry_queue_rate_limits ORDER BY event_type"
            ).fetchall()

    page = c.get("/rate-limits").text
    assert 'id="no-rate-limits"' in page and 'href="/rate-limits" class="active"' in page
    r = c.post(
        "/rate-limits/set",
        data={
            "event_type": "email.send",
            "plugin": "smtp",
            "max_leases": "600",
            "period_seconds": "3600",
        },
    )
    assert "rate limit email.send/smtp: 600 per 3600s" in r.text
    assert limits() == [("email.send", "smtp", 600, 3600.0)]
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        leased = RetryQueue(conn).acquire("worker-c", 100)
    used = sum(i.event_type == "email.send" for i in leased)
    assert used == 2  # due and due2
    r = c.get("/rate-limits")
    row = re.search(r'<tr data-key="email\.send/smtp"[^>]*>(.*?)</tr>', r.text, re.S)
    assert row, r.text
    cells = [
        " ".join(re.sub(r"<[^>]+>", " ", td).split())
        for td in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    ]
    # key, N per period, used in the last period, free now
    assert cells[:6] == ["email.send", "smtp", "600", "3600s (1h00m)", "2", "598"]
    # the period defaults to a second; setting a key again replaces its limit
    c.post(
        "/rate-limits/set", data={"event_type": "email.send", "plugin": "smtp", "max_leases": "20"}
    )
    c.post(
        "/rate-limits/set",
        data={"event_type": "sql.exec", "max_leases": "5", "period_seconds": "0.5"},
    )
    assert limits() == [("email.send", "smtp", 20, 1.0), ("sql.exec", None, 5, 0.5)]
    r = c.post("/rate-limits/clear", data={"event_type": "email.send", "plugin": "smtp"})
    assert (
        "rate limit email.send/smtp removed" in r.text
        and 'data-key="email.send/smtp"' not in r.text
    )
    assert limits() == [("sql.exec", None, 5, 0.5)]
    assert c.post("/rate-limits/clear", data={"event_type": "email.send"}).status_code == 404
    assert c.post("/rate-limits/drop", data={"event_type": "sql.exec"}).status_code == 404
    assert limits() == [("sql.exec", None, 5, 0.5)]


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"max_leases": "0"}, "max_leases"),  # refused by the database (22023)
        ({"max_leases": "5", "period_seconds": "0"}, "period_seconds"),
        ({"max_leases": "ten"}, "invalid max_leases"),
        ({"max_leases": "5", "period_seconds": "nan"}, "invalid period_seconds"),
        ({}, "invalid max_leases"),
        ({"event_type": "", "max_leases": "5"}, "invalid event_type"),
    ],
)
def test_a_refused_rate_limit_is_a_bad_request(
    seeded: Seeded, form: dict[str, str], says: str
) -> None:
    r = client(seeded.dsn).post("/rate-limits/set", data={"event_type": "sql.exec", **form})
    assert r.status_code == 400, r.text
    assert says in r.text and "database error" not in r.text
    with psycopg.connect(seeded.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM daz_retry_queue_rate_limits").fetchone() == (0,)


def test_cancel_by_filter_asks_then_cancels_exactly_the_shown_items(seeded: Seeded) -> None:
    """The items screen's filter chooses pending and processing items; the
    confirmation lists them, and the cancel acts on exactly those ids."""
    c, ids = client(seeded.dsn), seeded.ids
    page = c.get("/items?event_type=email.send").text
    assert 'id="cancel-matching"' in page
    assert 'id="cancel-matching"' not in c.get("/items").text  # a filter first
    assert 'id="cancel-matching"' not in c.get("/items?status=completed&plugin=smtp").text
    asked = c.post("/items/cancel/confirm", data={"event_type": "email.send"})
    # completed and dead-letter items of the type are not cancellable
    assert "Cancel 2 item(s)?" in asked.text
    both = " ".join(str(i) for i in sorted([ids["due"], ids["due2"]]))
    assert f'name="confirmed" value="{both}"' in asked.text
    assert status_of(seeded.dsn, ids["due"]) == "pending"  # asking cancels nothing
    r = c.post("/items/cancel/apply", data={"event_type": "email.send"})
    assert r.status_code == 400 and "confirmation" in r.text
    done = c.post("/items/cancel/apply", data={"event_type": "email.send", "confirmed": both})
    assert "cancelled 2" in done.text
    assert [status_of(seeded.dsn, ids[n]) for n in ("due", "due2", "completed", "dead_mail")] == [
        "cancelled", "cancelled", "completed", "dead_letter"
    ]
    # the status filter narrows what is cancelled: only the held webhook
    asked = c.post("/items/cancel/confirm", data={"plugin": "http", "status": "processing"})
    assert f'name="confirmed" value="{ids["processing"]}"' in asked.text
    applied = {"plugin": "http", "status": "processing", "confirmed": str(ids["processing"])}
    assert "cancelled 1" in c.post("/items/cancel/apply", data=applied).text
    assert status_of(seeded.dsn, ids["processing"]) == "cancelled"


def test_cancel_by_filter_never_cancels_an_item_the_confirmation_did_not_show(
    seeded: Seeded,
) -> None:
    """One confirmed item finishes and another arrives: the count is the same,
    the set is not, and nothing is cancelled."""
    c, ids = client(seeded.dsn), seeded.ids
    asked = c.post("/items/cancel/confirm", data={"plugin": "http"})
    assert f'name="confirmed" value="{ids["processing"]}"' in asked.text
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        q = RetryQueue(conn)
        assert q.complete(ids["processing"], "worker-a")
        unseen, _ = q.add("webhook.post", {"n": "unseen"}, plugin="http")
    applied = {"plugin": "http", "confirmed": str(ids["processing"])}
    r = c.post("/items/cancel/apply", data=applied)
    assert "nothing cancelled" in r.text
    assert status_of(seeded.dsn, unseen) == "pending"


def test_a_filter_matching_more_than_one_action_takes_asks_for_a_narrower_one(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: 150,000 matches gave a confirmation page carrying every id
    (939 kB) whose confirm then failed (400: more than the SQL's id arrays
    take). Beyond that bound the page says so and offers no confirm button."""
    from retryq_py.web import app as web_app

    with psycopg.connect(seeded.dsn) as conn:
        bound = conn.execute("SELECT max_item_ids FROM _retryq_limits").fetchone()
    assert bound == (web_app.AT_ONCE,)  # the dashboard's bound is the SQL's
    monkeypatch.setattr(web_app, "AT_ONCE", 1)  # seeded: 2 cancellable email.send items
    c = client(seeded.dsn)
    asked = c.post("/items/cancel/confirm", data={"event_type": "email.send"}).text
    assert 'id="too-many"' in asked and 'id="confirm"' not in asked
    assert 'name="confirmed"' not in asked and "retryq cancel" in asked
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        RetryQueue(conn).add("sql.exec", {"n": 2})
        conn.execute(
            "UPDATE daz_retry_queue SET status = 'dead_letter', completed_at = now()"
            " WHERE event_type = 'sql.exec' AND status = 'pending'"
        )
    for action in ("requeue", "purge"):
        asked = c.post(
            "/dead-letters/confirm", data={"action": action, "event_type": "sql.exec"}
        ).text
        assert 'id="too-many"' in asked and 'id="confirm"' not in asked, action
        assert f"retryq dead-letter {action}" in asked, action
    assert status_of(seeded.dsn, seeded.ids["due"]) == "pending"


def test_a_large_payload_is_shown_in_part_and_offered_whole(seeded: Seeded) -> None:
    """Red team: a 15 MB payload made a 45 MB item page. The page shows the
    first SHOWN_MAX characters and links the whole payload as JSON."""
    from retryq_py.web.app import SHOWN_MAX

    data = {"blob": "x" * (2 * SHOWN_MAX), "tail": "<end>"}
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        big, _ = RetryQueue(conn).add("big.payload", data)
    c = client(seeded.dsn)
    page = c.get(f"/items/{big}")
    assert page.status_code == 200
    assert len(page.text) < SHOWN_MAX + 20_000
    assert 'id="payload-cut"' in page.text and "&lt;end&gt;" not in page.text
    whole = c.get(f"/items/{big}/payload.json")
    assert whole.headers["content-type"].startswith("application/json")
    assert whole.json() == data
    small = c.get(f"/items/{seeded.ids['due']}").text
    assert 'id="payload-cut"' not in small and 'id="payload"' in small


def test_cancel_by_filter_needs_a_filter_that_can_match(seeded: Seeded) -> None:
    c = client(seeded.dsn)
    for form, says in (
        ({}, "needs a filter"),
        ({"status": "pending"}, "needs a filter"),
        ({"status": "dead_letter", "plugin": "sql"}, "only on pending and processing"),
        ({"event_type": "nope"}, None),
    ):
        r = c.post("/items/cancel/confirm", data=form)
        if says is None:
            assert r.status_code == 200 and "Cancel 0 item(s)?" in r.text
            assert 'id="confirm"' not in r.text
        else:
            assert r.status_code == 400 and says in r.text, (form, r.text)


def test_read_only_shows_and_refuses(seeded: Seeded) -> None:
    c = client(seeded.dsn, read_only=True)
    page = c.get("/dead-letters?event_type=sql.exec").text
    assert "read-only" in page and "purge-matching" not in page and "requeue" not in page
    assert 'id="cancel-matching"' not in c.get("/items?event_type=email.send").text
    for path, form in (
        ("/dead-letters/apply", {"action": "purge", "event_type": "sql.exec", "expected": "1"}),
        ("/dead-letters/confirm", {"action": "purge", "event_type": "sql.exec"}),
        (f"/items/{seeded.ids['dead_sql']}/requeue", {}),
        (f"/items/{seeded.ids['due']}/cancel", {"confirm": "yes"}),
        ("/items/cancel/confirm", {"event_type": "email.send"}),
        ("/items/cancel/apply", {"event_type": "email.send", "confirmed": "1"}),
        ("/circuits/close", {"event_type": "sms.send"}),
        ("/pauses/pause", {"event_type": "sms.send"}),
        ("/rate-limits/set", {"event_type": "sms.send", "max_leases": "1"}),
        ("/rate-limits/clear", {"event_type": "sms.send"}),
    ):
        assert c.post(path, data=form).status_code == 403, path
    assert status_of(seeded.dsn, seeded.ids["dead_sql"]) == "dead_letter"
    with psycopg.connect(seeded.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM daz_retry_queue_rate_limits").fetchone() == (0,)
    page = c.get("/rate-limits").text
    assert "set-rate-limit" not in page and "/rate-limits/clear" not in page


def test_token(seeded: Seeded) -> None:
    c = client(seeded.dsn, token="s3cret")
    assert c.get("/").status_code == 401
    assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = c.get("/items?status=pending&token=s3cret", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/items?status=pending"
    assert "httponly" in first.headers["set-cookie"].lower()
    assert c.get("/items").status_code == 200  # the cookie now
    assert TestClient(c.app).get("/rate-limits").status_code == 401


def test_basic_auth(seeded: Seeded) -> None:
    c = client(seeded.dsn, basic_auth="ops:pw")
    r = c.get("/")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    good = base64.b64encode(b"ops:pw").decode()
    bad = base64.b64encode(b"ops:no").decode()
    assert c.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    assert c.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401


def test_a_post_from_another_site_is_refused(seeded: Seeded) -> None:
    c = client(seeded.dsn)
    r = c.post(
        "/rate-limits/set",
        data={"event_type": "sql.exec", "max_leases": "1"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403
    form = {"action": "purge", "event_type": "sql.exec", "expected": "1"}
    r = c.post("/dead-letters/apply", data=form, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = c.post("/dead-letters/apply", data=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert status_of(seeded.dsn, seeded.ids["dead_sql"]) == "dead_letter"


def test_mounted_in_another_app(seeded: Seeded) -> None:
    outer = Starlette(routes=[Mount("/ops/retryq", app=create_app(web_config(seeded.dsn)))])
    c = TestClient(outer)
    page = c.get("/ops/retryq/").text
    assert 'href="/ops/retryq/items"' in page and 'src="/ops/retryq/static/htmx.min.js"' in page
    assert c.get("/ops/retryq/static/htmx.min.js").status_code == 200
    r = c.post("/ops/retryq/circuits/close", data={"event_type": "sms.send"})
    assert str(r.url).endswith("/ops/retryq/circuits?message=closed+sms.send%2F-")


def test_without_auth_it_answers_only_to_this_machines_names(seeded: Seeded) -> None:
    """DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1
    reaches a dashboard that trusts its port, and its requests name
    evil.example as Host (and its own origin as Origin, so the same-origin
    check passes). Refused, reads and actions alike; nothing paused."""
    c = TestClient(create_app(web_config(seeded.dsn), loopback_only=True))
    for host in ("evil.example:18080", "evil.example", "127.0.0.1.evil.example:18080",
                 "localhost.evil.example", "localhost:18080@evil.example", ""):
        assert c.get("/", headers={"Host": host}).status_code == 421, host
        r = c.post(
            "/pauses/pause",
            data={"all": "1"},
            headers={"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
        )
        assert r.status_code == 421, host
    with psycopg.connect(seeded.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM daz_retry_queue_pauses").fetchone() == (0,)
    for host in ("localhost:18080", "127.0.0.1:18080", "[::1]:18080", "127.0.0.1", "[::1]",
                 "LOCALHOST", "localhost.", "ops.localhost:18080", "127.0.0.2:18080"):
        assert c.get("/", headers={"Host": host}).status_code == 200, host
    # mounted in an app of one's own (loopback_only off), the Host is that app's business
    assert client(seeded.dsn).get("/", headers={"Host": "ops.example.com"}).status_code == 200


def test_retryq_web_without_auth_refuses_other_host_names(seeded: Seeded) -> None:
    """The CLI's server sets the check above (no auth, so loopback only)."""
    import http.client
    import os
    import signal

    argv = [str(RETRYQ)] if RETRYQ.exists() else [sys.executable, "-m", "retryq_py.cli"]
    proc = subprocess.Popen(
        [*argv, "web", "--database", seeded.dsn, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RETRYQ_WEB_")},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))  # type: ignore[union-attr]

        def status(host: str) -> int:
            h = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            h.request("GET", "/", headers={"Host": host})
            return h.getresponse().status

        assert status("evil.example") == 421
        assert status(f"127.0.0.1:{port}") == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_the_token_redirect_stays_on_this_site(seeded: Seeded) -> None:
    """?token= is taken off by a redirect to the same path: a path that reads
    as another site's address ("//evil.example/x", decoded from %2F) must not
    send the browser there."""
    for raw in ("/%2Fevil.example/x", "/%5Cevil.example/x", "/%2F%2Fevil.example/x"):
        c = client(seeded.dsn, token="s3cret")  # no cookie yet
        r = c.get(f"{raw}?token=s3cret&a=1", follow_redirects=False)
        assert r.status_code == 303, raw
        location = r.headers["location"]
        assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
        assert location.endswith("?a=1"), location


def test_refuses_to_listen_beyond_localhost_without_auth() -> None:
    open_ = web_config("dbname=x")
    check_listen("127.0.0.1", open_)
    check_listen("::1", open_)
    check_listen("localhost", open_)
    with pytest.raises(UsageProblem, match=r"refusing --host 0\.0\.0\.0 without authentication"):
        check_listen("0.0.0.0", open_)
    check_listen("0.0.0.0", web_config("dbname=x", token="t"))
    check_listen("0.0.0.0", web_config("dbname=x", basic_auth="a:b"))
    with pytest.raises(UsageProblem, match="--basic-auth"):
        web_config("dbname=x", basic_auth="nopassword")


def test_cli_refuses_to_listen_beyond_localhost_without_auth() -> None:
    argv = [str(RETRYQ)] if RETRYQ.exists() else [sys.executable, "-m", "retryq_py.cli"]
    r = subprocess.run(
        [*argv, "web", "--database", "dbname=x", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2
    assert r.stderr.startswith("retryq: refusing --host 0.0.0.0") and r.stderr.count("\n") == 1


def test_a_value_the_queue_refuses_is_a_bad_request_not_a_server_error(seeded: Seeded) -> None:
    r = client(seeded.dsn).post("/circuits/open", data={"event_type": "sms.send", "seconds": "-5"})
    assert r.status_code == 400, r.text
    assert "invalid seconds" in r.text and "database error" not in r.text
