"""Every number and duration a `retryq` option or argument takes, out of
range: exit 2 with one line naming it, never 1 (OverflowError, "timestamp
out of range") nor 4 (a too-big int finding no SQL function, 42883, read as
"not installed"). The table lists every numeric option; a test checks that
no option of the command tree is left out of it. Blank filter names are
refused the same way (README "A blank name is refused"), and the parsing the
dashboard shares raises a ValueError naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from psycopg import errors as pgerrors

from retryq_py import admin, ops
from retryq_py.cli.main import app, main

# (command, option or argument metavar) -> argv with "{}" for the value, and
# what the one error line must name (the option; for a float the SQL checks,
# the parameter it names).
INTS = [str(2**63), "99999999999999999999", str(-(2**63) - 1)]
FLOATS = ["inf", "-inf", "nan", "1e400", "1e308"]
DURATIONS = ["99999999999d", "3000000d", "36501d", "1e20", "9" * 400 + "s"]

WORKER = ["worker", "--handlers", "ranges_handlers:HANDLERS"]

TABLE: dict[tuple[str, str], tuple[list[str], str, list[str]]] = {
    ("metrics", "--port"): (["metrics", "--port={}"], "--port", INTS),
    ("migrate", "--steps"): (["migrate", "--rollback", "--yes", "--steps={}"], "--steps", INTS),
    ("enqueue", "--max-retries"): (
        ["enqueue", "--event-type", "e", "--data", "{{}}", "--max-retries={}"],
        "max-retries",
        INTS,
    ),
    ("enqueue", "--priority"): (
        ["enqueue", "--event-type", "e", "--data", "{{}}", "--priority={}"],
        "priority",
        INTS,
    ),
    ("enqueue", "--backoff-multiplier"): (
        ["enqueue", "--event-type", "e", "--data", "{{}}", "--backoff-multiplier={}"],
        "backoff_multiplier",
        FLOATS,
    ),
    ("enqueue", "--retry-delay"): (
        ["enqueue", "--event-type", "e", "--data", "{{}}", "--retry-delay={}"],
        "--retry-delay",
        [*DURATIONS, "366d"],
    ),
    ("enqueue", "--delay"): (
        ["enqueue", "--event-type", "e", "--data", "{{}}", "--delay={}"],
        "--delay",
        [*DURATIONS, "366d"],
    ),
    ("worker", "--worker-count"): (
        [*WORKER, "--worker-count={}"],
        "--worker-count",
        [*INTS, "1001"],
    ),
    ("worker", "--batch-size"): (
        [*WORKER, "--batch-size={}"],
        "--batch-size",
        INTS,
    ),
    ("worker", "--poll-interval"): (
        [*WORKER, "--exit-when-idle", "--poll-interval={}"],
        "--poll-interval",
        [*DURATIONS, "25h"],
    ),
    ("worker", "--metrics-port"): (
        [*WORKER, "--metrics-port={}"],
        "--metrics-port",
        INTS,
    ),
    ("cleanup", "--retention-days"): (
        ["cleanup", "--retention-days={}"],
        "retention-days",
        INTS,
    ),
    ("cleanup", "--batch-size"): (["cleanup", "--batch-size={}"], "batch-size", INTS),
    ("cancel", "--id"): (["cancel", "--yes", "--id={}"], "--id", INTS),
    ("cancel", "--older-than"): (["cancel", "--yes", "--older-than={}"], "--older-than", DURATIONS),
    ("demo", "--items"): (["demo", "--items={}"], "--items", INTS),
    ("demo", "--workers"): (["demo", "--workers={}"], "--workers", INTS),
    ("web", "--port"): (["web", "--port={}"], "--port", INTS),
    ("dead-letter list", "--older-than"): (
        ["dead-letter", "list", "--older-than={}"],
        "--older-than",
        DURATIONS,
    ),
    ("dead-letter list", "--limit"): (["dead-letter", "list", "--limit={}"], "--limit", INTS),
    ("dead-letter show", "ID"): (["dead-letter", "show", "--", "{}"], "'ID'", INTS),
    ("dead-letter requeue", "--id"): (["dead-letter", "requeue", "--id={}"], "--id", INTS),
    ("dead-letter requeue", "--older-than"): (
        ["dead-letter", "requeue", "--older-than={}"],
        "--older-than",
        DURATIONS,
    ),
    ("dead-letter purge", "--id"): (["dead-letter", "purge", "--yes", "--id={}"], "--id", INTS),
    ("dead-letter purge", "--older-than"): (
        ["dead-letter", "purge", "--yes", "--older-than={}"],
        "--older-than",
        DURATIONS,
    ),
    ("circuits open", "--seconds"): (
        ["circuits", "open", "ok", "--seconds={}"],
        "seconds",
        FLOATS,
    ),
    ("circuits set-threshold", "THRESHOLD"): (
        ["circuits", "set-threshold", "--event-type", "ok", "--", "{}"],
        "'THRESHOLD'",
        INTS,
    ),
    ("circuits set-threshold", "--cooldown"): (
        ["circuits", "set-threshold", "--event-type", "ok", "--cooldown={}"],
        "cooldown_seconds",
        FLOATS,
    ),
    ("circuits set-threshold", "--max-cooldown"): (
        ["circuits", "set-threshold", "--event-type", "ok", "--max-cooldown={}"],
        "max_cooldown_seconds",
        FLOATS,
    ),
    ("rate-limits set", "N"): (["rate-limits", "set", "ok", "--", "{}"], "'N'", INTS),
    ("rate-limits set", "--per"): (
        ["rate-limits", "set", "ok", "5", "--per={}"],
        "period_seconds",
        FLOATS,
    ),
}


def _numeric_params() -> set[tuple[str, str]]:
    """(command, option or argument metavar) of every parameter that takes a
    number or a duration, anywhere in the command tree."""
    found: set[tuple[str, str]] = set()

    def walk(cmd: Any, path: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])
        for p in cmd.params:
            kind = str(p.bare_type())
            if "int" in kind or "float" in kind or p.metavar == "DURATION":
                where = p.opts[0] if p.opts[0].startswith("-") else str(p.metavar)
                found.add((" ".join(path), where))

    walk(typer.main.get_command(app), [])
    return found


def test_the_table_covers_every_numeric_option() -> None:
    assert _numeric_params() == set(TABLE)


@pytest.fixture
def cli_env(module_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "ranges_handlers.py").write_text("HANDLERS = {'ranges.e': lambda item: None}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("RETRYQ_DEBUG", "RETRYQ_WORKER_COUNT", "RETRYQ_POLL_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RETRYQ_DATABASE_URL", module_dsn)
    yield module_dsn


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


CASES = [
    pytest.param(template, name, value, id=f"{cmd}:{opt}={value[:14]}")
    for (cmd, opt), (template, name, values) in TABLE.items()
    for value in values
]


@pytest.mark.parametrize(("template", "name", "value"), CASES)
def test_out_of_range_exits_2_naming_the_option(
    cli_env: str, capsys: pytest.CaptureFixture[str], template: list[str], name: str, value: str
) -> None:
    code, out, err = run([part.format(value) for part in template], capsys)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("retryq: "), err
    assert name.lower() in lines[0].lower(), lines[0]
    assert "Error" not in lines[0], lines[0]  # no exception class name (OverflowError)
    assert out == ""


FILTERS = {
    "cancel": ["cancel", "--yes"],
    "dead-letter list": ["dead-letter", "list"],
    "dead-letter requeue": ["dead-letter", "requeue"],
    "dead-letter purge": ["dead-letter", "purge", "--yes"],
}


@pytest.mark.parametrize("blank", ["", " ", "\u200b"])
@pytest.mark.parametrize("option", ["--event-type", "--plugin", "--error-code"])
@pytest.mark.parametrize("command", list(FILTERS))
def test_a_blank_filter_is_refused_naming_it(
    cli_env: str, capsys: pytest.CaptureFixture[str], command: str, option: str, blank: str
) -> None:
    """A blank filter matched nothing (or, for --plugin '', only a plugin of
    '' and not the items without one): refused like every blank name."""
    code, out, err = run([*FILTERS[command], f"{option}={blank}"], capsys)
    assert code == 2, (code, out, err)
    assert f"invalid {option}: must not be blank" in err
    assert out == ""


def test_shared_parsing_raises_a_value_error_naming_the_field() -> None:
    """What the dashboard parses with: a ValueError (and a UsageProblem, its
    400) whose `field` names the input."""
    cases = [
        (lambda: admin.parse_duration("99999999999d", "older_than"), "older_than"),
        (lambda: admin.parse_duration("1e20", "window"), "window"),
        (lambda: admin.parse_duration("soon", "window"), "window"),
        (lambda: admin.parse_int("99999999999999999999", "before"), "before"),
        (lambda: admin.parse_int("x", "before"), "before"),
        (lambda: admin.parse_ids("1 99999999999999999999", "ids"), "ids"),
        (lambda: admin.check_name(" ", "event_type"), "event_type"),
        (lambda: admin.parse_json("{", "data"), "data"),
    ]
    for call, field in cases:
        with pytest.raises(ValueError, match=field) as caught:
            call()
        assert isinstance(caught.value, admin.UsageProblem)
        assert getattr(caught.value, "field", None) == field
    assert admin.parse_duration("36500d", "x") == timedelta(days=36500)
    assert admin.parse_ids("1, 2 3", "ids") == (1, 2, 3)
    assert admin.parse_int(str(2**63 - 1), "before") == 2**63 - 1


def test_integers_beyond_bigint_are_refused_by_name_not_as_a_missing_function(
    module_dsn: str,
) -> None:
    """retryq_py.ops and the dead-letter filter (what the dashboard calls)
    refuse an int beyond a bigint with 22003 naming it; it was sent as numeric
    and found no function (42883)."""
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        calls = [
            (lambda: ops.set_rate_limit(conn, "ok", max_leases=2**63), "max_leases"),
            (
                lambda: ops.configure_circuit(conn, "ok", failure_threshold=2**64),
                "failure_threshold",
            ),
        ]
        for call, field in calls:
            with pytest.raises(pgerrors.NumericValueOutOfRange, match=f"invalid {field}"):
                call()
    t = admin.target(module_dsn)
    for filt, limit, field in [
        (admin.DeadLetterFilter(ids=(1, 2**63)), 50, r"item_ids\[1\]"),
        (admin.DeadLetterFilter(event_type="x"), 2**63, "limit"),
    ]:
        with pytest.raises(pgerrors.NumericValueOutOfRange, match=f"invalid {field}"):
            admin.dead_letter_list(t, filt, limit)
