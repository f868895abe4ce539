"""The dashboard in a real browser: Debian's headless Chromium driven by
Selenium, against a live server on a free port. Each test loads screens,
clicks as a person would, and checks the page and then the database.

Screenshots go to a temporary folder, or to RETRYQ_SCREENSHOTS when set
(`RETRYQ_SCREENSHOTS=docs/screenshots` refreshes the README's)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from retryq_py.admin import bind_port
from retryq_py.web import create_app, web_config
from tests.web.conftest import Seeded, status_of

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the web extra is not installed")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# CI installs them (.ci/run), so there a missing browser fails instead of skipping.
# What the page reads and does is test_app's and test_overview_reads' on every
# server; the browser adds nothing that depends on the server's version.
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
        reason="Debian's chromium and chromium-driver are not installed",
    ),
    pytest.mark.server_agnostic,
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session, with a profile of its own."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for downloads
    profile = tempfile.mkdtemp(prefix="retryq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots() -> Iterator[Path]:
    wanted = os.environ.get("RETRYQ_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        yield Path(wanted)
        return
    folder = tempfile.mkdtemp(prefix="retryq-shots-")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(module_dsn: str) -> Iterator[str]:
    """`retryq web` as the CLI runs it (uvicorn on a bound socket), in a thread."""
    sock = bind_port("127.0.0.1", 0)
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(web_config(module_dsn), loopback_only=True),
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


def wait(driver: Any, timeout: float = 10) -> Any:
    # htmx swaps elements out while a condition reads them: such a read is
    # tried again, not a failure (seen: #message's text read mid-swap)
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))


def click(driver: Any, by: str, value: str) -> None:
    """Clicks an element, finding it again if htmx swapped it out meanwhile."""

    def clicked(d: Any) -> bool:
        d.find_element(by, value).click()
        return True

    WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(clicked)


def shown(driver: Any, css: str) -> str:
    return str(wait(driver).until(ec.visibility_of_element_located((By.CSS_SELECTOR, css))).text)


def until(driver: Any, css: str, text: str) -> None:
    """Waits until `css` shows `text` (a click swaps the page in without a load)."""
    wait(driver).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def until_message(driver: Any, text: str) -> None:
    """Waits until the message is `text`, no more: where the one before it
    contains it ("paused sms.send" in "paused sms.send/no plugin"), `until`
    passed on the old page before the click's answer came."""
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "message"), text))
    wait(driver).until(lambda d: d.find_element(By.ID, "message").text.strip() == text)


def test_every_screen(seeded: Seeded, server: str, browser: Any, shots: Path) -> None:
    ids = seeded.ids
    browser.get(server + "/")
    assert shown(browser, "#count-pending .n") == "4"
    assert shown(browser, "#count-dead_letter .n") == "3"
    assert "email.send" in shown(browser, "#backlog")
    assert browser.find_elements(By.CSS_SELECTOR, "#hourly rect.completed")
    browser.save_screenshot(str(shots / "overview.png"))

    browser.find_element(By.LINK_TEXT, "Items").click()
    until(browser, "h1", "Items")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#items-table tbody tr")) == len(ids)
    browser.save_screenshot(str(shots / "items.png"))

    browser.get(f"{server}/items/{ids['retried']}")
    assert shown(browser, "#item-status") == "pending"
    assert "connection reset" in shown(browser, "#attempts")
    browser.save_screenshot(str(shots / "item.png"))

    browser.get(server + "/dead-letters")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")) == 3
    browser.save_screenshot(str(shots / "dead-letters.png"))

    browser.get(server + "/circuits")
    assert "open" in shown(browser, 'tr[data-key="sms.send/-"] .badge')
    browser.save_screenshot(str(shots / "circuits.png"))

    browser.get(server + "/workers")
    assert "worker-a" in shown(browser, "#workers")
    browser.save_screenshot(str(shots / "workers.png"))


def test_filter_then_open_an_item(seeded: Seeded, server: str, browser: Any) -> None:
    browser.get(server + "/items")
    rows = "#items-table tbody tr"
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == len(seeded.ids))
    Select(browser.find_element(By.NAME, "status")).select_by_value("dead_letter")
    # htmx swaps the table in place on change, and pushes the filter to the address
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 3)
    wait(browser).until(ec.url_contains("status=dead_letter"))
    # htmx may swap the table (and the filters) again while this types and
    # clicks: every step finds its element afresh
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.NAME, "event_type").send_keys("webhook.post") or True
    )
    click(browser, By.CSS_SELECTOR, "#filters button[type=submit]")
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 1)
    click(browser, By.LINK_TEXT, str(seeded.ids["dead_http"]))
    until(browser, "h1", f"Item #{seeded.ids['dead_http']}")
    assert shown(browser, "#item-status") == "dead_letter"
    assert "dead_http" in shown(browser, "#payload")
    assert "http_500" in shown(browser, "#attempts")


def test_requeue_then_purge_with_confirmation(
    seeded: Seeded, server: str, browser: Any, shots: Path
) -> None:
    ids = seeded.ids
    browser.get(f"{server}/items/{ids['dead_http']}")
    browser.find_element(By.ID, "requeue-item").click()
    until(browser, "#message", "requeued 1")
    assert shown(browser, "#item-status") == "pending"
    assert status_of(seeded.dsn, ids["dead_http"]) == "pending"

    browser.get(server + "/dead-letters?event_type=sql.exec")
    browser.find_element(By.ID, "purge-matching").click()
    until(browser, "h1", "Purge 1 dead letter(s)?")
    browser.save_screenshot(str(shots / "purge-confirm.png"))
    assert status_of(seeded.dsn, ids["dead_sql"]) == "dead_letter"  # not before the yes
    browser.find_element(By.ID, "confirm").click()
    until(browser, "#message", "purged 1")
    assert status_of(seeded.dsn, ids["dead_sql"]) is None
    assert status_of(seeded.dsn, ids["dead_mail"]) == "dead_letter"


def test_cancel_every_match_with_confirmation(
    seeded: Seeded, server: str, browser: Any, shots: Path
) -> None:
    """The items screen offers the cancel once a filter is typed (htmx swaps
    the button in with the table), asks with the list, then cancels exactly
    those: the pending email.send items, not its completed or dead ones."""
    ids = seeded.ids
    browser.get(server + "/items")
    rows = "#items-table tbody tr"
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == len(ids))
    assert not browser.find_elements(By.ID, "cancel-matching")  # no filter, no cancel
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.NAME, "event_type").send_keys("email.send") or True
    )
    click(browser, By.CSS_SELECTOR, "#filters button[type=submit]")
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 4)
    click(browser, By.ID, "cancel-matching")
    until(browser, "h1", "Cancel 2 item(s)?")
    browser.save_screenshot(str(shots / "cancel-confirm.png"))
    assert status_of(seeded.dsn, ids["due"]) == "pending"  # not before the yes
    browser.find_element(By.ID, "confirm").click()
    until(browser, "#message", "cancelled 2")
    assert [status_of(seeded.dsn, ids[n]) for n in ("due", "due2", "completed", "dead_mail")] == [
        "cancelled", "cancelled", "completed", "dead_letter"
    ]


def test_open_and_close_a_circuit(seeded: Seeded, server: str, browser: Any) -> None:
    def state() -> str:
        with psycopg.connect(seeded.dsn) as conn:
            row = conn.execute(
                "SELECT state FROM daz_retry_queue_circuits"
                " WHERE event_type = 'sql.exec' AND plugin_name = 'sql'"
            ).fetchone()
        assert row is not None
        return str(row[0])

    browser.get(server + "/circuits")
    row = 'tr[data-key="sql.exec/sql"]'
    assert shown(browser, f"{row} .badge") == "closed"
    browser.find_element(By.CSS_SELECTOR, f"{row} button").click()
    until(browser, "#message", "opened sql.exec/sql until closed")
    assert shown(browser, f"{row} .badge") == "open (forced)"
    assert state() == "open"
    browser.find_element(By.CSS_SELECTOR, f"{row} button").click()
    until(browser, "#message", "closed sql.exec/sql")
    assert shown(browser, f"{row} .badge") == "closed"
    assert state() == "closed"


def test_pause_and_resume_a_type(seeded: Seeded, server: str, browser: Any, shots: Path) -> None:
    def pauses() -> list[tuple[object, ...]]:
        with psycopg.connect(seeded.dsn) as conn:
            return conn.execute(
                "SELECT event_type, plugin_name, reason FROM daz_retry_queue_pauses"
            ).fetchall()

    browser.get(server + "/circuits")
    browser.find_element(By.LINK_TEXT, "Pauses").click()
    until(browser, "h1", "Pauses")
    assert shown(browser, "#no-pauses").startswith("nothing paused")
    form = browser.find_element(By.ID, "pause")
    form.find_element(By.NAME, "event_type").send_keys("sql.exec")
    form.find_element(By.NAME, "reason").send_keys("database migration")
    click(browser, By.CSS_SELECTOR, "#pause button[type=submit]")
    until(browser, "#message", "paused sql.exec")
    row = 'tr[data-key="sql.exec/*"]'
    assert "database migration" in shown(browser, row)
    assert pauses() == [("sql.exec", None, "database migration")]
    browser.save_screenshot(str(shots / "pauses.png"))
    click(browser, By.CSS_SELECTOR, f"{row} button")
    until(browser, "#message", "resumed sql.exec")
    assert shown(browser, "#no-pauses").startswith("nothing paused")
    assert pauses() == []


def test_pause_and_resume_the_items_without_a_plugin(
    seeded: Seeded, server: str, browser: Any
) -> None:
    """The 'no plugin' box pauses only the type's items without a plugin, a
    key apart from the type's every-plugin pause; each row resumes its own."""

    def pauses() -> list[tuple[object, ...]]:
        with psycopg.connect(seeded.dsn) as conn:
            return conn.execute(
                "SELECT event_type, plugin_name FROM daz_retry_queue_pauses ORDER BY 2 NULLS LAST"
            ).fetchall()

    browser.get(server + "/pauses")
    for no_plugin in (True, False):
        form = browser.find_element(By.ID, "pause")
        form.find_element(By.NAME, "event_type").send_keys("sms.send")
        if no_plugin:
            form.find_element(By.NAME, "no_plugin").click()
        click(browser, By.CSS_SELECTOR, "#pause button[type=submit]")
        until_message(browser, "paused sms.send/no plugin" if no_plugin else "paused sms.send")
    assert "(none)" in shown(browser, 'tr[data-key="sms.send/-"]')
    assert "(every)" in shown(browser, 'tr[data-key="sms.send/*"]')
    assert pauses() == [("sms.send", ""), ("sms.send", None)]
    click(browser, By.CSS_SELECTOR, 'tr[data-key="sms.send/-"] button')
    until_message(browser, "resumed sms.send/no plugin")
    assert pauses() == [("sms.send", None)]
    click(browser, By.CSS_SELECTOR, 'tr[data-key="sms.send/*"] button')
    until_message(browser, "resumed sms.send")
    assert pauses() == []


def test_set_and_clear_a_rate_limit(seeded: Seeded, server: str, browser: Any, shots: Path) -> None:
    def limits() -> list[tuple[object, ...]]:
        with psycopg.connect(seeded.dsn) as conn:
            return conn.execute(
                "SELECT event_type, plugin_name, max_leases, period_seconds"
                " FROM daz_retry_queue_rate_limits"
            ).fetchall()

    browser.get(server + "/")
    browser.find_element(By.LINK_TEXT, "Rate limits").click()
    until(browser, "h1", "Rate limits")
    assert shown(browser, "#no-rate-limits").startswith("no rate limit")
    form = browser.find_element(By.ID, "set-rate-limit")
    for name, value in (
        ("event_type", "email.send"),
        ("plugin", "smtp"),
        ("max_leases", "600"),
        ("period_seconds", "3600"),
    ):
        form.find_element(By.NAME, name).send_keys(value)
    click(browser, By.CSS_SELECTOR, "#set-rate-limit button[type=submit]")
    until(browser, "#message", "rate limit email.send/smtp: 600 per 3600s")
    row = 'tr[data-key="email.send/smtp"]'
    assert shown(browser, f"{row} .max") == "600"
    assert shown(browser, f"{row} .per") == "3600s (1h00m)"
    assert shown(browser, f"{row} .free") == "600"
    assert limits() == [("email.send", "smtp", 600, 3600.0)]
    browser.save_screenshot(str(shots / "rate-limits.png"))
    click(browser, By.CSS_SELECTOR, f"{row} button")
    until(browser, "#message", "rate limit email.send/smtp removed")
    assert shown(browser, "#no-rate-limits").startswith("no rate limit")
    assert limits() == []
