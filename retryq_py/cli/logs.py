"""What `retryq worker` logs: its setup (text or one JSON object per line) and
an on_event callback that logs each failed attempt (warning) and each dead
letter (error) with the item's identity, and each snooze (info), rate limited
so that a failure storm cannot flood the log. The worker's own messages go
through the same handler."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from retryq_py.cli.render import visible

if TYPE_CHECKING:
    from retryq_py.worker import WorkerEvent

log = logging.getLogger("retryq.worker.items")

# The LogRecord attributes every record has; the rest came in `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
FORMATS = ("text", "json")


def announcer(fmt: str, text: Callable[[str], None]) -> Callable[..., None]:
    """How the worker command says what it is doing (its banner, its metrics
    port): `text(message)` in the text format, where it is not a log line (it
    shows whatever the level); an info record of the `retryq.worker` logger
    with the fields as JSON keys in the json one, so that every line on stderr
    is JSON."""

    def say(message: str, **fields: Any) -> None:
        if fmt == "json":
            logging.getLogger("retryq.worker").info(message, extra=fields)
        else:
            text(message)

    return say


def escape_text(text: str) -> str:
    """`text` on one line, inert in a terminal (a producer sets event_type and
    correlation_id, a handler its error text: a newline in one would write a
    line that looks like the worker's): controls as escapes (\\n, \\x1b,
    \\u202e, see render.visible); a tab is kept."""
    return visible(text, keep="\t")


class TextFormatter(logging.Formatter):
    """The text format: `TIME LEVEL LOGGER: MESSAGE`, each record one line
    (its message escaped by escape_text), a traceback or stack on the lines
    after it, each of them indented (escaped but for their line ends), so
    no line a record writes passes for another record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_text(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _block(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _block(super().formatStack(stack_info))


def _block(text: str) -> str:
    return "\n".join("    " + escape_text(line) for line in text.split("\n"))


# Escaped in a JSON line, which json.dumps (ensure_ascii=False) writes as
# they are: the C1 controls, the Unicode line separators and bidi controls.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        # json escapes C0 controls itself; the rest as \uXXXX, still the same JSON
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def configure(level: int, fmt: str, stream: Any = None) -> None:
    """The root logger's one handler, in `fmt` (text or json), at `level`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _timer(seconds: float, callback: Callable[[], None]) -> None:
    timer = threading.Timer(seconds, callback)
    timer.daemon = True
    timer.start()


def _left_out(skipped: int) -> None:
    log.warning(
        "%d failure line(s) left out by the rate limit",
        skipped,
        extra={"suppressed": skipped},
    )


class EventLog:
    """on_event for RetryWorker: a warning per failed attempt, an error per dead
    letter, an info line per snooze; at most `burst` lines at once and `rate`
    a second after that (a token bucket). The next line that gets through says
    how many were left out; when none comes (the storm ended), a line of its
    own says it once the limit lets a line through again, and close() says
    what is still owed.

    `next_retry(item_id)` may give when a failed item is due again (read from
    the queue; called only for the lines that are written). `after(seconds,
    callback)` schedules the storm's end line (a daemon threading.Timer by
    default; tests pass their own)."""

    def __init__(
        self,
        *,
        rate: float = 5.0,
        burst: int = 20,
        next_retry: Callable[[int], datetime | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        after: Callable[[float, Callable[[], None]], Any] | None = None,
    ) -> None:
        self.rate, self.burst = rate, burst
        self._next_retry = next_retry
        self._clock = clock
        self._after = after or _timer
        self._tokens = float(burst)
        self._at = clock()
        self._suppressed = 0
        self._end_scheduled = False
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def _admit(self) -> int | None:
        """None when over the limit; else how many lines were left out before."""
        with self._lock:
            self._refill()
            if self._tokens < 1:
                self._suppressed += 1
                if not self._end_scheduled:
                    # in case no line comes to carry the count
                    self._end_scheduled = True
                    self._after((1 - self._tokens) / self.rate, self._storm_over)
                return None
            self._tokens -= 1
            skipped, self._suppressed = self._suppressed, 0
            return skipped

    def _storm_over(self) -> None:
        """The limit lets a line through again: say what was left out, unless
        a line that got through said it already."""
        with self._lock:
            self._end_scheduled = False
            self._refill()
            if not self._suppressed:
                return
            if self._tokens < 1:  # lines still arriving: check again later
                self._end_scheduled = True
                self._after((1 - self._tokens) / self.rate, self._storm_over)
                return
            self._tokens -= 1
            skipped, self._suppressed = self._suppressed, 0
        _left_out(skipped)

    def close(self) -> None:
        """Say what was left out and not yet said (the worker has stopped)."""
        with self._lock:
            skipped, self._suppressed = self._suppressed, 0
        if skipped:
            _left_out(skipped)

    def __call__(self, event: WorkerEvent) -> None:
        if event.kind not in ("failed", "dead_lettered", "snoozed"):
            return
        skipped = self._admit()
        if skipped is None:
            return
        item = event.item
        fields: dict[str, Any] = {
            "item_id": item.id,
            "event_id": str(item.event_id),
            "event_type": item.event_type,
            "plugin_name": item.plugin_name or None,
            "correlation_id": item.correlation_id or None,
            "attempt": item.retry_count + 1,
            "max_attempts": item.max_retries + 1,
            "error": event.error,
            "error_code": event.code,
        }
        if skipped:
            fields["suppressed"] = skipped
        tail = f" ({skipped} more failure line(s) left out by the rate limit)" if skipped else ""
        who = (
            f"item {item.id} ({item.event_type}, event_id {item.event_id}"
            + (f", correlation_id {item.correlation_id}" if item.correlation_id else "")
            + ")"
        )
        attempt = f"attempt {item.retry_count + 1} of {item.max_retries + 1}"
        code = f" [{event.code}]" if event.code else ""
        if event.kind == "snoozed":
            fields["delay_seconds"] = event.delay
            fields["snooze"] = item.snoozes + 1
            log.info(
                "%s snoozed for %gs (snooze %d, no attempt spent): %s%s",
                who,
                event.delay or 0.0,
                item.snoozes + 1,
                event.error,
                tail,
                extra=fields,
            )
            return
        if event.kind == "dead_lettered":
            log.error(
                "%s dead-lettered after %s: %s%s%s",
                who,
                attempt,
                event.error,
                code,
                tail,
                extra=fields,
            )
            return
        due = self._next_retry(item.id) if self._next_retry is not None else None
        fields["next_retry_at"] = due.isoformat() if due else None
        when = (
            f"; next retry at {due.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC" if due else ""
        )
        log.warning(
            "%s failed, %s: %s%s%s%s", who, attempt, event.error, code, when, tail, extra=fields
        )
