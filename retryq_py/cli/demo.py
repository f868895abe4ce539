"""`retryq demo`: the whole queue at work in a few seconds, with nothing set up.

Without a database it starts an embedded PostgreSQL in a temp dir; with one
it works in a throwaway schema (retryq_demo) that it refuses to reuse and
drops at the end. Either way: install the schema, enqueue a mix of failed
operations (chat messages and SQL writes as in the integration guide, some
that recover after a retry or two, some that never can, some of a type no
handler knows), drain it with real RetryWorkers, and show what happened.

The mix is planned up front from a seed, so the final counts are known
before the workers start and the demo checks them: it is also an end-to-end
test of the queue.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from retryq_py import admin, ops
from retryq_py._sql import ops as _q
from retryq_py.cli.render import dead_letters_table, error_history_table, stats_table, totals_line
from retryq_py.embedded import EmbeddedServerError, embedded_server, sigterm_as_exit
from retryq_py.errors import PermanentError, RetryableError
from retryq_py.queue import RetryQueue
from retryq_py.worker import RetryWorker, WorkerCounts, WorkerEvent

DEMO_SCHEMA = "retryq_demo"
CHAT = "cytube.event.chatMsg"
SQL_FAILED = "sql.exec.failed"
UNKNOWN = "cytube.event.mediaUpdate"
MAX_RETRIES = 3
RETRY_DELAY = 0.2  # seconds; doubles per retry, so a spent item takes 0.2+0.4+0.8 s
NEVER = 1000  # fail_times for an operation that never recovers
# The circuit breaker (migration 0002) normally cools down for 30 s and more;
# the demo shortens it so that a trip shows and still ends within seconds.
CIRCUIT_THRESHOLD = 5
CIRCUIT_COOLDOWN = 0.2
CIRCUIT_MAX_COOLDOWN = 0.5

# --- the handlers ------------------------------------------------------------
# Each item's data says how many attempts fail before it succeeds
# (`fail_times`) or how it fails for good (`fatal`), so outcomes are planned.


def _io() -> None:
    # stands in for the network round trip a real handler waits on
    time.sleep(random.uniform(0.002, 0.015))


def resend_chat(item: Any) -> None:
    """cytube.event.chatMsg: send the message again."""
    _io()
    data = item.event_data
    if data.get("fatal"):
        raise PermanentError(f"cytube: channel {data['channel']} is private (403)", "forbidden")
    if item.retry_count < int(data.get("fail_times", 0)):
        raise RetryableError("cytube: websocket closed (1006)", "ws_closed")


def replay_sql(item: Any) -> None:
    """sql.exec.failed: run the failed statement again (the guide's handleSQLExec)."""
    _io()
    data = item.event_data
    if data.get("fatal"):
        raise PermanentError(
            'duplicate key value violates unique constraint "chat_log_pkey"', "23505"
        )
    if item.retry_count < int(data.get("fail_times", 0)):
        raise RetryableError("connection to server failed: Connection refused", "08006")


HANDLERS = {CHAT: resend_chat, SQL_FAILED: replay_sql}

# --- the plan ----------------------------------------------------------------

_CHANNELS = ("lobby", "anime", "music", "movies")
_USERS = ("ana", "bo", "chen", "dita", "eli", "fox")
_LINES = ("hello!", "this song is great", "skip pls", "brb", "lol", "who picked this?")


@dataclass(frozen=True)
class Plan:
    items: list[dict[str, Any]]
    completed: int  # items that must end completed
    dead: int  # items that must end as dead letters
    kinds: dict[str, int]  # description -> count, for the intro


def make_plan(n: int, seed: int = 7) -> Plan:
    """n items: ~50% chat messages, ~42% failed SQL writes, ~8% of an unknown type."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    kinds = {
        "chat ok": 0,
        "chat flaky": 0,
        "chat forbidden": 0,
        "sql ok": 0,
        "sql flaky": 0,
        "sql duplicate": 0,
        "sql db down": 0,
        "unknown type": 0,
    }
    completed = dead = 0
    common = {"max_retries": MAX_RETRIES, "retry_delay": RETRY_DELAY, "backoff_multiplier": 2.0}
    for i in range(n):
        roll = rng.random()
        channel = rng.choice(_CHANNELS)
        corr = f"demo-{i:04d}"
        if roll < 0.50:
            sub = rng.random()
            kind = "chat ok" if sub < 0.6 else "chat flaky" if sub < 0.9 else "chat forbidden"
            data: dict[str, Any] = {
                "channel": channel,
                "user": rng.choice(_USERS),
                "msg": rng.choice(_LINES),
                "fail_times": rng.randint(1, 2) if kind == "chat flaky" else 0,
                "fatal": kind == "chat forbidden",
            }
            items.append(
                {
                    "event_type": CHAT,
                    "data": data,
                    "channel": channel,
                    "plugin": "cytube",
                    "priority": 7,
                    "correlation_id": corr,
                    "tags": ["cytube", channel],
                    **common,
                }
            )
        elif roll < 0.92:
            sub = rng.random()
            kind = (
                "sql ok"
                if sub < 0.5
                else "sql flaky"
                if sub < 0.8
                else "sql duplicate"
                if sub < 0.9
                else "sql db down"
            )
            data = {
                "query": "INSERT INTO chat_log (channel, username, msg) VALUES ($1, $2, $3)",
                "params": [channel, rng.choice(_USERS), rng.choice(_LINES)],
                "correlation_id": corr,
                "error": "write failed: connection reset by peer",
                "fail_times": {"sql flaky": rng.randint(1, 3), "sql db down": NEVER}.get(kind, 0),
                "fatal": kind == "sql duplicate",
            }
            items.append(
                {
                    "event_type": SQL_FAILED,
                    "data": data,
                    "plugin": "sql",
                    "metadata": {"retry_reason": "initial_failure"},
                    "correlation_id": corr,
                    "tags": ["sql"],
                    **common,
                }
            )
        else:
            kind = "unknown type"
            items.append(
                {
                    "event_type": UNKNOWN,
                    "data": {"channel": channel, "media": f"yt:{rng.getrandbits(32):08x}"},
                    "channel": channel,
                    "plugin": "cytube",
                    "correlation_id": corr,
                    **common,
                }
            )
        kinds[kind] += 1
        if kind in ("chat ok", "chat flaky", "sql ok", "sql flaky"):
            completed += 1
        else:
            dead += 1
    return Plan(items, completed, dead, kinds)


# --- running it --------------------------------------------------------------


@dataclass(frozen=True)
class DemoResult:
    plan: Plan
    counts: list[WorkerCounts]
    stats: admin.Stats
    dead_letters: list[admin.DeadLetter]
    elapsed: float

    @property
    def completed(self) -> int:
        return self.stats.totals["completed"]

    @property
    def dead(self) -> int:
        return self.stats.totals["dead_letter"]


@contextmanager
def _demo_target(database: str | None, keep: bool, console: Console) -> Iterator[admin.Target]:
    """A schema of its own: in an embedded server, or a new schema in `database`."""
    if database is None:
        started = time.monotonic()
        console.print("Starting an embedded PostgreSQL (no --database given)...")
        try:
            with embedded_server() as server:
                console.print(
                    f"  ready in {time.monotonic() - started:.1f} s"
                    f" (data in {server.directory}, removed at the end)"
                )
                yield admin.target(server.uri, DEMO_SCHEMA)
        except EmbeddedServerError as exc:
            raise admin.CommandError(
                f"{exc}; run the demo against a server with `retryq demo --database URL`"
            ) from exc
        console.print("Stopped the embedded PostgreSQL and removed its directory.")
        return
    t = admin.target(database, DEMO_SCHEMA)
    with admin.open_connection(admin.Target(t.dsn)) as conn:
        if admin.schema_exists(conn, DEMO_SCHEMA):
            raise admin.UsageProblem(
                f"schema {DEMO_SCHEMA} already exists in {admin.Target(t.dsn).describe()} "
                f"(kept by an earlier `retryq demo --keep`?); drop it first: "
                f"DROP SCHEMA {DEMO_SCHEMA} CASCADE"
            )
    try:
        yield t
    finally:
        if keep:
            console.print(
                f"Kept schema {DEMO_SCHEMA} (--keep): look around with `retryq stats"
                f" --schema {DEMO_SCHEMA}`; DROP SCHEMA {DEMO_SCHEMA} CASCADE removes it."
            )
        else:
            with admin.open_connection(admin.Target(t.dsn)) as conn:
                conn.execute(_q.drop_schema(DEMO_SCHEMA))
            console.print(f"Dropped the demo schema {DEMO_SCHEMA}.")


class _Board:
    """Live progress: completed, waiting for a retry, dead letters."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.lock = threading.Lock()
        self.retrying: set[int] = set()
        self.failed_attempts = 0
        self.done = progress.add_task("completed", total=total)
        self.wait = progress.add_task("retrying", total=total)
        self.dead = progress.add_task("dead letters", total=total)

    def on_event(self, event: WorkerEvent) -> None:
        with self.lock:
            if event.kind == "completed":
                self.retrying.discard(event.item.id)
                self.progress.advance(self.done)
            elif event.kind == "dead_lettered":
                self.retrying.discard(event.item.id)
                self.failed_attempts += 1
                self.progress.advance(self.dead)
            elif event.kind == "failed":
                self.retrying.add(event.item.id)
                self.failed_attempts += 1
            self.progress.update(self.wait, completed=len(self.retrying))


def _drain(t: admin.Target, workers: int, threads: int, board: _Board) -> list[WorkerCounts]:
    """Run `workers` RetryWorkers (each with `threads` handler threads) until idle."""
    pool = [
        RetryWorker(
            t.conninfo,
            HANDLERS,
            schema=t.schema,
            worker_id=f"demo-worker-{n + 1}",
            worker_count=threads,
            batch_size=10,
            poll_interval=1.0,
            lock_timeout=30,
            grace_period=2.0,
            on_event=board.on_event,
            # the demo's queue is its own: show the dead letter of a type
            # nobody handles
            all_event_types=True,
        )
        for n in range(workers)
    ]
    results: list[WorkerCounts | BaseException] = []

    def run(w: RetryWorker) -> None:
        try:
            results.append(w.run(exit_when_drained=True, install_signal_handlers=False))
        except BaseException as exc:
            results.append(exc)

    running = [threading.Thread(target=run, args=(w,), daemon=True) for w in pool]
    for thread in running:
        thread.start()
    try:
        # join in short slices so Ctrl-C reaches this thread at once
        while any(thread.is_alive() for thread in running):
            for thread in running:
                thread.join(0.1)
    except KeyboardInterrupt:
        for w in pool:
            w.stop(force=True)
        for thread in running:
            thread.join(5.0)
        raise
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return [r for r in results if isinstance(r, WorkerCounts)]


def run_demo(
    console: Console,
    database: str | None = None,
    *,
    items: int = 200,
    workers: int = 2,
    threads: int = 4,
    keep: bool = False,
) -> DemoResult:
    """The demo, start to finish; raises CommandError if the outcome is not the plan's."""
    if not 1 <= items <= 100_000:
        raise admin.UsageProblem("invalid --items: must be between 1 and 100000")
    if not 1 <= workers <= 16:
        raise admin.UsageProblem("invalid --workers: must be between 1 and 16")
    started = time.monotonic()
    plan = make_plan(items)
    with sigterm_as_exit(), _demo_target(database, keep, console) as t:
        console.print(f"Installing retryq into schema {t.schema} (the packaged migrations)...")
        admin.migrate_apply(t)
        with admin.connect(t) as conn:
            _configure_circuits(conn)
            RetryQueue(conn, schema=t.schema).add_many(plan.items)
        mix = ", ".join(f"{v} {k}" for k, v in plan.kinds.items() if v)
        console.print(f"Enqueued {len(plan.items)} failed operations: {mix}.")
        console.print(
            f"Running {workers} worker(s) x {threads} handler threads; retries after "
            f"{RETRY_DELAY} s, doubling, at most {MAX_RETRIES}, then a dead letter."
        )
        with Progress(
            TextColumn("{task.description:>12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            board = _Board(progress, len(plan.items))
            counts = _drain(t, workers, threads, board)
        console.print(f"Idle after {board.failed_attempts} failed attempts.")
        for event_type, plugin, opened in circuit_trips(t):
            console.print(
                f"Circuit breaker: {event_type}/{plugin or '-'} opened {opened} time(s)"
                f" ({CIRCUIT_THRESHOLD} failures in a row; cool-down {CIRCUIT_COOLDOWN} s"
                " here, 30 s by default); its items waited without spending retries."
            )
        stats = admin.stats(t)
        dead_letters = admin.dead_letter_list(t, admin.DeadLetterFilter(), limit=len(plan.items))
        examples = _examples(t, dead_letters)
        _show(console, stats, dead_letters, examples)
        got = (stats.totals["completed"], stats.totals["dead_letter"])
        if got != (plan.completed, plan.dead):
            raise admin.CommandError(
                f"demo outcome differs from its plan: {got[0]} completed and {got[1]} dead"
                f" letters, expected {plan.completed} and {plan.dead}"
            )
    result = DemoResult(plan, counts, stats, dead_letters, time.monotonic() - started)
    console.print(
        f"Done in {result.elapsed:.1f} s: {result.completed} completed, "
        f"{result.dead} dead letters, as planned."
    )
    if database is None:
        console.print(
            "Your database next: `retryq demo --database postgresql://USER@HOST/DB` (in a"
            f" throwaway schema {DEMO_SCHEMA}), then `retryq migrate --database ...` to install."
        )
    else:
        console.print(
            "To install the queue for real: `retryq migrate --database ...`, then run"
            " `retryq worker --database ... --handlers MODULE:ATTR`."
        )
    return result


def _has_circuits(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(_q.HAS_CIRCUITS).fetchone()
    return bool(row and row[0])


def _configure_circuits(conn: psycopg.Connection[Any]) -> None:
    if _has_circuits(conn):
        ops.configure_circuit(
            conn,
            None,
            failure_threshold=CIRCUIT_THRESHOLD,
            cooldown_seconds=CIRCUIT_COOLDOWN,
            max_cooldown_seconds=CIRCUIT_MAX_COOLDOWN,
        )


def circuit_trips(t: admin.Target) -> list[tuple[str, str | None, int]]:
    """(event_type, plugin, times opened) for every circuit that opened."""
    with admin.connect(t) as conn:
        if not _has_circuits(conn):
            return []
        return [(r[0], r[1], int(r[2])) for r in conn.execute(_q.CIRCUITS_OPENED).fetchall()]


def _examples(t: admin.Target, dead: list[admin.DeadLetter]) -> list[Any]:
    """One dead letter per (event type, error code), with the longest history first."""
    seen: set[tuple[str, str | None]] = set()
    picked: list[Any] = []
    for d in sorted(dead, key=lambda d: (-d.retry_count, d.id)):
        key = (d.event_type, d.last_error_code)
        if key not in seen:
            seen.add(key)
            picked.append(admin.item_show(t, d.id))
    return picked


SHOWN_DEAD_LETTERS = 15


def _show(
    console: Console, stats: admin.Stats, dead: list[admin.DeadLetter], examples: list[Any]
) -> None:
    console.print()
    console.print(stats_table(stats))
    console.print(totals_line(stats))
    console.print()
    title = f"dead letters ({len(dead)}, newest first)"
    console.print(dead_letters_table(dead[:SHOWN_DEAD_LETTERS], title=title))
    if len(dead) > SHOWN_DEAD_LETTERS:
        console.print(f"... and {len(dead) - SHOWN_DEAD_LETTERS} more")
    for item in examples:
        console.print()
        console.print(
            f"Dead letter {item.id} ({item.event_type}, correlation_id {item.correlation_id}):"
        )
        console.print(error_history_table(item))
    console.print()
