"""What the CLI shows from the queue reaches the terminal as it is: a control
character, an escape sequence or a bidi override in a producer's field, a
handler's error text or an operator's pause reason is written as its escape
(\\x1b, \\u202e, \\n), never raw, and rich markup or :emoji: codes in it are
text, not formatting (an event type "[/]" failed `retryq stats`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone

import psycopg
import pytest

from retryq_py import RetryQueue, ops
from retryq_py.cli.main import main

# A title change, a bell, a screen clear, a right-to-left override, a line of
# its own after a newline and a carriage return, a C1 CSI, markup and an emoji code.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\u202e[/]:smile:\nFORGED\r\x9b\u2066"
# what a terminal would act on: C0 (but the newline between lines), DEL,
# C1, line separators, bidi controls
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


@pytest.fixture
def hostile(module_dsn: str, module_reset: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """One dead letter with HOSTILE in every text field, a pause, a circuit
    and a rate limit of its key; the item's id."""
    monkeypatch.setenv("RETRYQ_DATABASE_URL", module_dsn)
    monkeypatch.delenv("RETRYQ_DEBUG", raising=False)
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(module_reset)
        q = RetryQueue(conn)
        now = datetime.now(timezone.utc)
        item_id, _ = q.add(
            HOSTILE,
            {"text": HOSTILE},
            channel=HOSTILE,
            plugin=HOSTILE,
            metadata={"m": HOSTILE},
            correlation_id=HOSTILE,
            tags=[HOSTILE],
            dedupe_key=HOSTILE,
            max_retries=0,
            now=now,
        )
        worker = "w" + HOSTILE
        assert [i.id for i in q.acquire(worker, 10, now=now)] == [item_id]
        assert q.fail(item_id, worker, HOSTILE, "c" + HOSTILE, retryable=False, now=now)
        ops.pause(conn, HOSTILE, HOSTILE, reason=HOSTILE)
        ops.open_circuit(conn, HOSTILE, HOSTILE)
        ops.set_rate_limit(conn, HOSTILE, HOSTILE, max_leases=5)
        yield item_id


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["stats"],
        ["dead-letter", "list"],
        ["dead-letter", "show", "{id}"],
        ["pauses"],
        ["circuits"],
        ["rate-limits"],
        ["circuits", "close", HOSTILE + "x"],  # an error line quoting the key
    ],
    ids=lambda argv: " ".join(a for a in argv if a.isprintable())[:30],
)
def test_values_from_the_queue_are_shown_escaped(
    hostile: int, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run([a.format(id=hostile) for a in argv], capsys)
    shown = out + err
    assert code in (0, 1, 2), (code, shown)
    assert "MarkupError" not in shown
    raw = sorted({f"U+{ord(c):04X}" for c in RAW.findall(shown)})
    assert raw == [], shown
    # nothing starts a line of its own (a forged log or table line)
    assert not [line for line in shown.splitlines() if line.startswith("FORGED")]
    assert "\\x1b]0;pwned\\x07" in shown or "\\u001b]0;pwned\\u0007" in shown, shown


def test_markup_and_emoji_codes_are_text(hostile: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["dead-letter", "show", str(hostile)], capsys)
    assert code == 0
    assert "[/]:smile:" in out
    assert "\\u202e" in out and "\\x9b" in out and "\\n" in out and "\\r" in out


def test_visible_escapes_exactly_what_a_terminal_acts_on() -> None:
    from retryq_py.cli.render import visible

    assert visible("a\x1bb\u202ec\nd\te\x7f\x85\u2028é✓ \\x") == (
        "a\\x1bb\\u202ec\\nd\\te\\x7f\\x85\\u2028é✓ \\x"
    )
