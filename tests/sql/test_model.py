"""A plain-Python model of the queue's rules, driven side by side with the SQL
functions over three connections and three worker ids.

The model clock only moves when a rule says so; every call passes it as p_now.
After every step the database must equal the model (ids, status, retry_count,
next_retry_at, lease, rate limits and their tokens), and the invariants of
issue 4 are checked on the rows. Rate limits (issue 14 item 6): a log of every
lease of a limited key, and no window of one period holds more than its limit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import currently_in_test_context, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg.types.json import Jsonb

from tests.helpers import reset

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
WORKERS = ("w1", "w2", "w3")
EVENT_TYPES = ("alpha", "beta")
ERROR_CODES = (None, "E1", "E2")
LEASE_CODE = "lease_expired"
N_CONNS = 3

# Values that are exact in binary floating point, so that the model's backoff
# equals the database's to the microsecond.
ITEM_SPEC = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(EVENT_TYPES),
        "priority": st.sampled_from([1, 2, 5, 5, 9, 10]),
        "max_retries": st.integers(0, 3),
        "retry_delay_seconds": st.sampled_from([0, 1, 5, 30]),
        "backoff_multiplier": st.sampled_from([1.0, 1.5, 2.0, 3.0]),
        "max_retry_delay_seconds": st.sampled_from([0, 10, 40, 86400]),
        "delay_seconds": st.sampled_from([0, 0, 0, 1, 10]),
    },
    # two dedupe keys, so that items meet their twins (issue 14 item 2)
    optional={"dedupe_key": st.sampled_from(["k1", "k2"])},
)
LIVE = ("pending", "processing")
# Rate limits: small, with periods of a few seconds, so that the clock (moved
# by whole seconds) crosses windows and meets their exact ends.
RATE_MAX_LEASES = (1, 2, 3, 4)
RATE_PERIODS = (1, 2, 5)
# A limit's most token rows (_retryq_rate_rows, 64 when installed): the model
# runs with 2, so that rows of several tokens (a limit of 3 or 4) meet its
# few items.
RATE_ROWS = 2


def backoff(k: int, delay: float, multiplier: float, cap: float) -> dt.timedelta:
    """The wait before retry number k: delay * multiplier^(k-1), capped, no jitter."""
    secs = 0.0 if delay == 0 or cap == 0 else min(delay * multiplier ** (k - 1), cap)
    return dt.timedelta(seconds=secs)


@dataclass
class Item:
    id: int
    event_type: str
    priority: int
    max_retries: int
    delay: float
    multiplier: float
    cap: float
    next_retry_at: dt.datetime
    status: str = "pending"
    retry_count: int = 0
    locked_by: str | None = None
    locked_until: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    last_code: str | None = None
    # why it is a dead letter: "spent" (budget) or "permanent"
    dead_reason: str | None = None
    snoozes: int = 0
    # due when a snooze or a retry_after said, not by the backoff formula
    due_by_caller: bool = False
    dedupe_key: str | None = None

    def holds(self, worker: str) -> bool:
        return self.status == "processing" and self.locked_by == worker

    def spent(self) -> bool:
        """An expired lease with no budget left: acquire buries it, no token."""
        return self.status == "processing" and self.retry_count >= self.max_retries


@dataclass
class TokenRow:
    """One row of a limit's tokens (_retryq_rate_token): cap tokens, the
    leases of its current use and their latest time, the latest lease of its
    use before (None: never, '-infinity')."""

    cap: int
    used: int = 0
    used_at: dt.datetime | None = None
    prev_used_at: dt.datetime | None = None

    def as_tuple(self) -> tuple[int, int, dt.datetime | None, dt.datetime | None]:
        return (self.cap, self.used, self.used_at, self.prev_used_at)


@dataclass
class RateLimit:
    """An event type's limit (the model's items have no plugin): max_leases
    tokens in least(max_leases, RATE_ROWS) rows by slot, dealt round-robin;
    `dropped` the latest last use of the rows a lower limit dropped, which
    rows re-created by a higher one take over."""

    max_leases: int
    period: dt.timedelta
    rows: dict[int, TokenRow] = field(default_factory=dict)
    dropped: dt.datetime | None = None

    def _old(self, t: dt.datetime | None, now: dt.datetime) -> bool:
        return t is None or t <= now - self.period

    def room(self, slot: int, now: dt.datetime) -> int:
        """Leases the row may take at `now`: all its tokens once its last
        lease is a period old (a new use), else what its use left, once the
        use before is a period old."""
        r = self.rows[slot]
        if self._old(r.used_at, now):
            return r.cap
        return max(r.cap - r.used, 0) if self._old(r.prev_used_at, now) else 0

    def free(self, now: dt.datetime) -> int:
        return sum(self.room(s, now) for s in self.rows)

    def _add(self, slot: int, k: int, now: dt.datetime) -> None:
        r = self.rows[slot]
        if self._old(r.used_at, now):
            r.prev_used_at, r.used = r.used_at, 0
        r.used += k
        r.used_at = now if r.used_at is None else max(r.used_at, now)

    def take(self, n: int, now: dt.datetime) -> None:
        """n leases at `now` (the grant's choice): all in the first row (by
        slot) with room for them; when none has, from the rows in slot order,
        each as far as it has room."""
        whole = [s for s in sorted(self.rows) if self.room(s, now) >= n]
        if whole:
            self._add(whole[0], n, now)
            return
        for slot in sorted(self.rows):
            k = min(self.room(slot, now), n)
            if k:
                self._add(slot, k, now)
                n -= k
        assert n == 0, "more leases than room"


@dataclass(frozen=True)
class Setting:
    """One retry_rate_limit_set of a key, in force until the next set or
    clear; `lifetime` numbers the stretches between a clear and the next."""

    max_leases: int
    period: dt.timedelta
    lifetime: int


ROW_SQL = """
SELECT id, status, retry_count, max_retries, next_retry_at, locked_by,
       locked_until, priority, coalesce(completed_at, dead_lettered_at),
       last_error_code, (error_history -> -1 ->> 'retryable')::boolean
FROM daz_retry_queue ORDER BY id
"""


class QueueModel(RuleBasedStateMachine):
    """Subclassed per test run with `conns` bound to open connections."""

    conns: tuple[psycopg.Connection[Any], ...] = ()

    def __init__(self) -> None:
        super().__init__()
        reset(self.conns[0])
        self.now = T0
        self.items: dict[int, Item] = {}
        self.completed_ever: set[int] = set()
        self.archived: set[int] = set()
        self.seen_ids: set[int] = set()
        # paused keys: an event type, or None for the whole queue
        self.paused: set[str | None] = set()
        # rate limits by event type; every setting of a key; every lease of a
        # limited key as (lease time, index of the setting in force)
        self.rate_limits: dict[str, RateLimit] = {}
        self.rate_settings: dict[str, list[Setting]] = {}
        self.rate_leases: dict[str, list[tuple[dt.datetime, int]]] = {}
        self.rate_lifetimes = 0
        # the last acquire's grants: (key, leases), in the order acquire made them
        self._grants: list[tuple[str, int]] = []
        self.last_kind = "init"

    # -- helpers ---------------------------------------------------------------

    def _any(self, *statuses: str) -> bool:
        return any(it.status in statuses for it in self.items.values())

    def _pick(self, data: st.DataObject, statuses: tuple[str, ...]) -> int:
        """An item id, mostly one in the given statuses, sometimes any or none."""
        preferred = sorted(i for i, it in self.items.items() if it.status in statuses)
        pool = preferred or sorted(self.items) or [10**9]
        if data.draw(st.integers(0, 4), label="pick any") == 0:
            pool = [*sorted(self.items), 10**9]
        return data.draw(st.sampled_from(pool), label="item")

    def _worker_for(self, data: st.DataObject, item_id: int) -> str:
        it = self.items.get(item_id)
        if it is not None and it.locked_by and data.draw(st.integers(0, 3)) > 0:
            return it.locked_by
        return data.draw(st.sampled_from(WORKERS), label="worker")

    def _expected_acquire(
        self, worker: str, batch: int, types: list[str] | None = None
    ) -> tuple[list[int], list[int]]:
        """(ids handed out in order, ids buried) by the rule in acquire_retry_items:
        only the routed event types (all when None), none of a paused key, and
        an expired lease of those neither taken over nor buried.

        Rate limits: a key with no token free when acquire starts is skipped
        (its spent expired leases are buried all the same); of the others each
        lease, a takeover too, takes a token, the most urgent items of a key
        first; a burial takes none. This follows acquire's passes over each
        priority: a window of as many due items as the batch has room for,
        leased as far as their keys have tokens; a key whose tokens ran out
        is closed then, and a scan that came back short because of it scans
        the same priority again without it, so other keys' items fill the
        batch. Without limits this is the plain rule: the first `batch` due
        items, most urgent first.
        """
        self._grants = []
        if None in self.paused:  # the whole queue
            return [], []
        now = self.now
        free = {k: lim.free(now) for k, lim in self.rate_limits.items()}
        closed = {k for k, n in free.items() if n == 0}
        taken: list[int] = []
        buried: list[int] = []
        done: set[int] = set()

        def grant(items: list[Item]) -> list[Item]:
            # _retryq_rate_grant: per limited key, as many of its first items
            # as it has tokens free; every item of a key without a limit
            want = Counter(it.event_type for it in items if it.event_type in free)
            got = {k: min(n, free[k]) for k, n in want.items()}
            for k, n in got.items():
                free[k] -= n
                if n:
                    self._grants.append((k, n))
            rank: Counter[str] = Counter()
            out = []
            for it in items:
                rank[it.event_type] += 1
                if it.event_type not in got or rank[it.event_type] <= got[it.event_type]:
                    out.append(it)
            return out

        remaining = batch
        buried_flag = False  # the setting retryq.buried, for the transaction
        priority = 10
        while priority >= 1 and remaining > 0:
            due = sorted(
                (
                    it
                    for it in self.items.values()
                    if it.priority == priority
                    and it.id not in done
                    and it.status in LIVE
                    and it.next_retry_at <= now
                    and (it.locked_until is None or it.locked_until <= now)
                    and (types is None or it.event_type in types)
                ),
                key=lambda it: (it.next_retry_at, it.id),
            )
            if not self.paused:
                # the lighter statement: leases nothing if it meets an expired lease
                picked = [it for it in due if it.event_type not in closed][:remaining]
                if not any(it.status == "processing" for it in picked):
                    leased = grant(picked)
                    taken += [it.id for it in leased]
                    done.update(it.id for it in leased)
                    remaining -= len(leased)
                    if remaining == 0:
                        continue
                    closed |= {k for k, n in free.items() if n == 0}
                    due = [it for it in due if it.id not in done]
            if not due:
                priority -= 1
                continue
            asked = remaining
            locked = [
                it
                for it in due
                if it.event_type not in self.paused and (it.event_type not in closed or it.spent())
            ][:asked]
            spent = [it.id for it in locked if it.spent()]
            leased = grant([it for it in locked if not it.spent()])
            buried += spent
            taken += [it.id for it in leased]
            done.update(spent)
            done.update(it.id for it in leased)
            remaining -= len(leased)
            buried_flag = buried_flag or bool(spent)
            if len(leased) < asked and buried_flag:
                buried_flag = False  # the same priority again
                continue
            if len(leased) < asked:
                before = len(closed)
                closed |= {k for k, n in free.items() if n == 0}
                if len(closed) > before:
                    continue  # keys ran out of tokens: the same priority again
            priority -= 1
        return taken, buried

    def _window_excess(self) -> str | None:
        """The first window [t, t + period) of one key's lease times that holds
        more leases than its limit, described; None when there is none. Within
        one setting the bound is max_leases per period exactly. A window that
        spans changes (no clear between) may hold the largest of the limits in
        force during it, measured over the shortest of their periods: each
        token is reused only a period after its last use, and a token that a
        lower limit dropped comes back with its last use."""
        for key, log in self.rate_leases.items():
            settings_ = self.rate_settings[key]
            for i, (t, first) in enumerate(log):
                life = settings_[first].lifetime
                length = settings_[first].period
                for _ in range(2):  # the window, then that of its shortest period
                    inside = [
                        s for u, s in log[i:] if u < t + length and settings_[s].lifetime == life
                    ]
                    span = settings_[first : max(inside) + 1]
                    length = min(x.period for x in span)
                limits = [x.max_leases for x in span]
                if len(inside) > max(limits):
                    return (
                        f"{key}: {len(inside)} leases in [{t}, {t + length}),"
                        f" limit {max(limits)} (settings {span})"
                    )
        return None

    def _take_tokens(self, leases: Counter[str]) -> None:
        """Adds the leases of each of the acquire's grants (one per scan that
        met a limited key) to the key's token rows (database_matches_model
        compares)."""
        totals: Counter[str] = Counter()
        for key, n in self._grants:
            totals[key] += n
        assert totals == leases, f"grants {self._grants}, leases {leases}"
        for key, n in self._grants:
            lim = self.rate_limits[key]
            free = lim.free(self.now)
            assert n <= free, f"{key}: {n} leases with {free} tokens free"
            lim.take(n, self.now)

    def _bury(self, it: Item, reason: str, code: str | None) -> None:
        it.status = "dead_letter"
        it.locked_by = None
        it.locked_until = None
        it.finished_at = self.now
        it.dead_reason = reason
        it.last_code = code

    # -- rules -----------------------------------------------------------------

    # a few active items at a time, so that steps go to the other rules
    @precondition(
        lambda self: sum(it.status in ("pending", "processing") for it in self.items.values()) < 6
    )
    @rule(
        c=st.integers(0, N_CONNS - 1),
        specs=st.lists(ITEM_SPEC, min_size=1, max_size=3),
        batch=st.booleans(),
    )
    def enqueue(self, c: int, specs: list[dict[str, Any]], batch: bool) -> None:
        conn = self.conns[c]
        if batch:
            rows = conn.execute(
                "SELECT id, deduplicated FROM enqueue_retry_items(%s, p_now => %s)",
                [Jsonb([{**s, "event_data": {"n": i}} for i, s in enumerate(specs)]), self.now],
            ).fetchall()
        else:
            rows = []
            for i, s in enumerate(specs):
                rows += conn.execute(
                    "SELECT id, deduplicated FROM enqueue_retry_item("
                    " p_event_type => %(event_type)s, p_event_data => %(data)s,"
                    " p_priority => %(priority)s, p_max_retries => %(max_retries)s,"
                    " p_retry_delay_seconds => %(retry_delay_seconds)s,"
                    " p_backoff_multiplier => %(backoff_multiplier)s,"
                    " p_max_retry_delay_seconds => %(max_retry_delay_seconds)s,"
                    " p_delay_seconds => %(delay_seconds)s, p_now => %(now)s,"
                    " p_dedupe_key => %(dedupe_key)s)",
                    {"dedupe_key": None, **s, "data": Jsonb({"n": i}), "now": self.now},
                ).fetchall()
        assert len(rows) == len(specs)
        for (item_id, deduplicated), s in zip(rows, specs, strict=True):
            key = s.get("dedupe_key")
            holder = next(
                (
                    it.id
                    for it in self.items.values()
                    if key is not None and it.dedupe_key == key and it.status in LIVE
                ),
                None,
            )
            # a live twin (in the table, or earlier in this batch) is returned
            assert (item_id, deduplicated) == (holder, True) if holder else not deduplicated, (
                f"key {key}: got {item_id} deduplicated={deduplicated}, live holder {holder}"
            )
            if deduplicated:
                continue
            assert item_id not in self.seen_ids, "an id was reused"
            self.items[item_id] = Item(
                id=item_id,
                event_type=s["event_type"],
                priority=s["priority"],
                max_retries=s["max_retries"],
                delay=s["retry_delay_seconds"],
                multiplier=s["backoff_multiplier"],
                cap=s["max_retry_delay_seconds"],
                next_retry_at=self.now + dt.timedelta(seconds=s["delay_seconds"]),
                dedupe_key=key,
            )
            self.seen_ids.add(item_id)
        self.last_kind = "enqueue"

    @initialize(specs=st.lists(ITEM_SPEC, min_size=1, max_size=4), batch=st.booleans())
    def start(self, specs: list[dict[str, Any]], batch: bool) -> None:
        self.enqueue(0, specs, batch)

    @precondition(lambda self: bool(self.items))
    @rule(
        c=st.integers(0, N_CONNS - 1),
        worker=st.sampled_from(WORKERS),
        batch=st.integers(1, 4),
        lease=st.sampled_from([1, 5, 30, 300]),
        secs=st.sampled_from([0, 0, 0, 1, 2, 5, 31, 301]),
        types=st.sampled_from([None, None, None, ["alpha"], ["beta"], ["alpha", "beta"]]),
    )
    def acquire(
        self,
        c: int,
        worker: str,
        batch: int,
        lease: int,
        secs: int = 0,
        types: list[str] | None = None,
    ) -> None:
        self.now += dt.timedelta(seconds=secs)  # time passes between polls
        expected, buried = self._expected_acquire(worker, batch, types)
        rows = (
            self.conns[c]
            .execute(
                "SELECT id, retry_count, locked_until, priority, next_retry_at"
                " FROM acquire_retry_items(%s, %s, %s, %s, p_event_types => %s)",
                [worker, batch, lease, self.now, types],
            )
            .fetchall()
        )
        got = [r[0] for r in rows]
        if currently_in_test_context():
            note(f"acquire {worker} batch={batch} at {self.now}: got {got}, model {expected}")
        for item_id in got:
            it = self.items.get(item_id)
            assert it is not None, f"acquire returned unknown id {item_id}"
            assert item_id not in self.completed_ever, f"completed item {item_id} handed out"
            assert it.status != "dead_letter", f"dead letter {item_id} handed out"
            assert not (
                it.status == "processing" and it.locked_until and it.locked_until > self.now
            ), f"item {item_id} leased to {it.locked_by} until {it.locked_until} handed out"
        assert len(set(got)) == len(got), "one item twice in a batch"
        leases = Counter(
            self.items[i].event_type for i in got if self.items[i].event_type in self.rate_limits
        )
        for key, n in leases.items():
            at = len(self.rate_settings[key]) - 1
            self.rate_leases.setdefault(key, []).extend([(self.now, at)] * n)
        excess = self._window_excess()
        assert excess is None, f"a rate limit's window holds too many leases: {excess}"
        assert got == expected, "acquire chose other items or another order than the model"
        self._take_tokens(leases)
        until = self.now + dt.timedelta(seconds=lease)
        for item_id in buried:
            self._bury(self.items[item_id], "spent", LEASE_CODE)
        for item_id, retry_count, locked_until, priority, _ in rows:
            it = self.items[item_id]
            if it.status == "processing":  # an expired lease taken over costs an attempt
                it.retry_count += 1
                it.last_code = LEASE_CODE
            it.status = "processing"
            it.locked_by = worker
            it.locked_until = until
            assert (retry_count, locked_until, priority) == (it.retry_count, until, it.priority)
        self.last_kind = "acquire"

    @precondition(lambda self: bool(self.items) and bool(self.rate_limits))
    @rule(
        c=st.integers(0, N_CONNS - 1),
        worker=st.sampled_from(WORKERS),
        batch=st.integers(1, 4),
        lease=st.sampled_from([1, 5, 30]),
        secs=st.sampled_from([0, 1]),
    )
    def poll_limited(self, c: int, worker: str, batch: int, lease: int, secs: int) -> None:
        """Another poll soon after, while a limit is set: it meets keys whose
        tokens the last one used up, and tokens freed by exactly a period."""
        self.acquire(c, worker, batch, lease, secs)

    @precondition(lambda self: self._any("processing"))
    @rule(c=st.integers(0, N_CONNS - 1), data=st.data(), many=st.booleans())
    def complete(self, c: int, data: st.DataObject, many: bool) -> None:
        item_id = self._pick(data, ("processing",))
        worker = self._worker_for(data, item_id)
        it = self.items.get(item_id)
        if many:
            ids = [item_id, *data.draw(st.lists(st.sampled_from(sorted(self.items) or [0])))]
            ids_set = set(ids)
            done = (
                self.conns[c]
                .execute("SELECT complete_retry_items(%s, %s, %s)", [ids, worker, self.now])
                .fetchone()
            )
            winners = [i for i in ids_set if i in self.items and self.items[i].holds(worker)]
            assert done == (len(winners),)
        else:
            ok = (
                self.conns[c]
                .execute("SELECT complete_retry_item(%s, %s, %s)", [item_id, worker, self.now])
                .fetchone()
            )
            winners = [item_id] if it is not None and it.holds(worker) else []
            assert ok == (bool(winners),)
        for i in winners:
            won = self.items[i]
            won.status = "completed"
            won.locked_by = None
            won.locked_until = None
            won.finished_at = self.now
            self.completed_ever.add(i)
        self.last_kind = "complete"

    @precondition(lambda self: self._any("processing"))
    @rule(
        c=st.integers(0, N_CONNS - 1),
        data=st.data(),
        retryable=st.sampled_from([True, True, True, False]),
        code=st.sampled_from(ERROR_CODES),
        retry_after=st.sampled_from([None, None, None, 0, 3, 100]),
    )
    def fail(
        self,
        c: int,
        data: st.DataObject,
        retryable: bool,
        code: str | None,
        retry_after: int | None = None,
    ) -> None:
        item_id = self._pick(data, ("processing",))
        worker = self._worker_for(data, item_id)
        it = self.items.get(item_id)
        ok = (
            self.conns[c]
            .execute(
                "SELECT fail_retry_item(%s, %s, 'boom', %s, %s, %s, %s)",
                [item_id, worker, code, retryable, self.now, retry_after],
            )
            .fetchone()
        )
        holds = it is not None and it.holds(worker)
        assert ok == (holds,)
        if it is not None and holds:
            if not retryable:
                self._bury(it, "permanent", code)
            elif it.retry_count >= it.max_retries:
                self._bury(it, "spent", code)
            else:
                it.retry_count += 1
                it.status = "pending"
                it.locked_by = None
                it.locked_until = None
                it.last_code = code
                if retry_after is None:
                    it.next_retry_at = self.now + backoff(
                        it.retry_count, it.delay, it.multiplier, it.cap
                    )
                else:  # the caller's delay instead of the backoff, still capped
                    it.next_retry_at = self.now + dt.timedelta(seconds=min(retry_after, it.cap))
                it.due_by_caller = retry_after is not None
        self.last_kind = "fail"

    @precondition(lambda self: self._any("processing"))
    @rule(
        c=st.integers(0, N_CONNS - 1),
        data=st.data(),
        delay=st.sampled_from([0, 5, 60]),
        limit=st.sampled_from([0, 1, 2, 100]),
    )
    def snooze(self, c: int, data: st.DataObject, delay: int, limit: int) -> None:
        """Back to pending after `delay`, no attempt spent, no failure kept;
        the snooze past `limit` of them is a dead letter (snooze_limit)."""
        item_id = self._pick(data, ("processing",))
        worker = self._worker_for(data, item_id)
        it = self.items.get(item_id)
        ok = (
            self.conns[c]
            .execute(
                "SELECT snooze_retry_item(%s, %s, %s, %s, %s)",
                [item_id, worker, delay, limit, self.now],
            )
            .fetchone()
        )
        holds = it is not None and it.holds(worker)
        assert ok == (holds,)
        if it is not None and holds:
            if it.snoozes >= limit:
                self._bury(it, "permanent", "snooze_limit")
            else:
                it.snoozes += 1
                it.status = "pending"
                it.locked_by = None
                it.locked_until = None
                it.next_retry_at = self.now + dt.timedelta(seconds=delay)
                it.due_by_caller = True
        self.last_kind = "snooze"

    @precondition(lambda self: self._any("processing"))
    @rule(c=st.integers(0, N_CONNS - 1), data=st.data(), lease=st.sampled_from([1, 10, 300]))
    def extend(self, c: int, data: st.DataObject, lease: int) -> None:
        item_id = self._pick(data, ("processing",))
        worker = self._worker_for(data, item_id)
        it = self.items.get(item_id)
        ok = (
            self.conns[c]
            .execute("SELECT extend_retry_lock(%s, %s, %s, %s)", [item_id, worker, lease, self.now])
            .fetchone()
        )
        holds = it is not None and it.holds(worker)
        assert ok == (holds,)
        if it is not None and holds:
            it.locked_until = self.now + dt.timedelta(seconds=lease)
        self.last_kind = "extend"

    @precondition(lambda self: self._any("processing"))
    @rule(c=st.integers(0, N_CONNS - 1), data=st.data())
    def release(self, c: int, data: st.DataObject) -> None:
        item_id = self._pick(data, ("processing",))
        worker = self._worker_for(data, item_id)
        ids = {item_id, *data.draw(st.lists(st.sampled_from(sorted(self.items) or [0])))}
        n = (
            self.conns[c]
            .execute("SELECT release_retry_items(%s, %s)", [sorted(ids), worker])
            .fetchone()
        )
        winners = [i for i in ids if i in self.items and self.items[i].holds(worker)]
        assert n == (len(winners),)
        for i in winners:
            it = self.items[i]
            it.status = "pending"
            it.locked_by = None
            it.locked_until = None
        self.last_kind = "release"

    @precondition(lambda self: self._any("dead_letter"))
    @rule(c=st.integers(0, N_CONNS - 1), data=st.data())
    def requeue(self, c: int, data: st.DataObject) -> None:
        how = data.draw(st.sampled_from(["ids", "ids", "event_type", "error_code", "dead_before"]))
        dead = sorted(i for i, it in self.items.items() if it.status == "dead_letter")
        args: dict[str, Any] = {
            "ids": None,
            "event_type": None,
            "error_code": None,
            "dead_before": None,
        }
        if how == "ids":
            args["ids"] = data.draw(st.lists(st.sampled_from([*dead, 10**9]), min_size=1))
        elif how == "event_type":
            args["event_type"] = data.draw(st.sampled_from(EVENT_TYPES))
        elif how == "error_code":
            args["error_code"] = data.draw(st.sampled_from([LEASE_CODE, "E1", "E2"]))
        else:
            back = data.draw(st.sampled_from([0, 60]))
            args["dead_before"] = self.now - dt.timedelta(seconds=back)
        n = (
            self.conns[c]
            .execute(
                "SELECT requeue_dead_letter_items(p_item_ids => %(ids)s,"
                " p_event_type => %(event_type)s, p_error_code => %(error_code)s,"
                " p_dead_before => %(dead_before)s, p_now => %(now)s)",
                {**args, "now": self.now},
            )
            .fetchone()
        )
        chosen = [
            it
            for it in self.items.values()
            if it.status == "dead_letter"
            and (args["ids"] is None or it.id in args["ids"])
            and (args["event_type"] is None or it.event_type == args["event_type"])
            and (args["error_code"] is None or it.last_code == args["error_code"])
            and (
                args["dead_before"] is None
                or (it.finished_at is not None and it.finished_at < args["dead_before"])
            )
        ]
        # a dead letter whose key a live item holds stays dead; of several
        # with one key, the newest returns
        live_keys = {it.dedupe_key for it in self.items.values() if it.status in LIVE}
        chosen = [
            it
            for it in chosen
            if it.dedupe_key is None
            or (
                it.dedupe_key not in live_keys
                and it.id == max(o.id for o in chosen if o.dedupe_key == it.dedupe_key)
            )
        ]
        assert n == (len(chosen),)
        for it in chosen:
            it.status = "pending"
            it.retry_count = 0
            it.next_retry_at = self.now
            it.finished_at = None
            it.dead_reason = None
            it.snoozes = 0
        self.last_kind = "requeue"

    @precondition(lambda self: self._any("completed", "dead_letter"))
    @rule(
        c=st.integers(0, N_CONNS - 1),
        days=st.integers(0, 2),
        batch=st.integers(1, 3),
        archive=st.booleans(),
    )
    def cleanup(self, c: int, days: int, batch: int, archive: bool) -> None:
        row = (
            self.conns[c]
            .execute(
                "SELECT deleted_count, archived_count FROM cleanup_retry_queue("
                " p_retention_days => %s, p_batch_size => %s,"
                " p_archive_dead_letters => %s, p_now => %s)",
                [days, batch, archive, self.now],
            )
            .fetchone()
        )
        cutoff = self.now - dt.timedelta(days=days)
        gone = [
            it
            for it in self.items.values()
            if it.finished_at is not None and it.finished_at < cutoff
        ]
        kept = [it.id for it in gone if it.status in ("dead_letter", "cancelled") and archive]
        assert row == (len(gone), len(kept))
        for it in gone:
            del self.items[it.id]
        self.archived.update(kept)
        self.last_kind = "cleanup"

    @precondition(lambda self: bool(self.items))
    @rule(
        c=st.integers(0, N_CONNS - 1), data=st.data(), dry_run=st.sampled_from([False, False, True])
    )
    def cancel(self, c: int, data: st.DataObject, dry_run: bool) -> None:
        """Pending and processing items chosen by ids or event type end as
        cancelled for good (finished now, never leased again, their holder's
        acknowledgements find no lease); finished ones are left alone."""
        ids: list[int] | None = None
        event_type: str | None = None
        if data.draw(st.booleans(), label="by ids"):
            pool = [*sorted(self.items), 10**9]
            ids = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4), label="ids")
        else:
            event_type = data.draw(st.sampled_from(EVENT_TYPES), label="event type")
        n = (
            self.conns[c]
            .execute(
                "SELECT cancel_retry_items(p_item_ids => %s, p_event_type => %s,"
                " p_dry_run => %s, p_now => %s)",
                [ids, event_type, dry_run, self.now],
            )
            .fetchone()
        )
        chosen = [
            it
            for it in self.items.values()
            if it.status in ("pending", "processing")
            and (ids is None or it.id in ids)
            and (event_type is None or it.event_type == event_type)
        ]
        assert n == (len(chosen),)
        if not dry_run:
            for it in chosen:
                it.status = "cancelled"
                it.locked_by = None
                it.locked_until = None
                it.finished_at = self.now
        self.last_kind = "cancel"

    @rule(c=st.integers(0, N_CONNS - 1), key=st.sampled_from([*EVENT_TYPES, None]))
    def pause(self, c: int, key: str | None) -> None:
        """An event type, or the whole queue, is paused: acquire leases none
        of its items and takes none over (the model's acquire), budgets stay."""
        new = self.conns[c].execute("SELECT retry_queue_pause(%s)", [key]).fetchone()
        assert new == (key not in self.paused,)
        self.paused.add(key)
        self.last_kind = "pause"

    @precondition(lambda self: bool(self.paused))
    @rule(c=st.integers(0, N_CONNS - 1), key=st.sampled_from([*EVENT_TYPES, None]))
    def resume(self, c: int, key: str | None) -> None:
        """Ends exactly this key's pause (resuming a type leaves a whole-queue
        pause in place)."""
        was = self.conns[c].execute("SELECT retry_queue_resume(%s)", [key]).fetchone()
        assert was == (key in self.paused,)
        self.paused.discard(key)
        self.last_kind = "resume"

    @rule(
        c=st.integers(0, N_CONNS - 1),
        key=st.sampled_from(EVENT_TYPES),
        max_leases=st.sampled_from(RATE_MAX_LEASES),
        period=st.sampled_from(RATE_PERIODS),
    )
    def set_rate_limit(self, c: int, key: str, max_leases: int, period: int) -> None:
        """A limit of `max_leases` per `period` s on an event type: created
        with as many free tokens, or changed (the rows above the new count
        go, the limit keeps the latest of their last uses; new ones take that
        use over, full, or are free at once when there is none; the rest keep
        their use and take their new cap)."""
        ok = (
            self.conns[c]
            .execute("SELECT retry_rate_limit_set(%s, NULL, %s, %s)", [key, max_leases, period])
            .fetchone()
        )
        assert ok == (True,)
        lim = self.rate_limits.get(key)
        if lim is None:
            self.rate_lifetimes += 1
            lim = self.rate_limits[key] = RateLimit(max_leases, dt.timedelta(seconds=period))
        lim.max_leases = max_leases
        lim.period = dt.timedelta(seconds=period)
        n_rows = min(max_leases, RATE_ROWS)
        uses = [r.used_at for s, r in lim.rows.items() if s > n_rows and r.used_at is not None]
        lim.dropped = max([*uses, *([lim.dropped] if lim.dropped else [])], default=None)
        rows = {}
        for s in range(1, n_rows + 1):
            cap = (max_leases - s) // RATE_ROWS + 1
            kept = lim.rows.get(s)
            if kept is not None:
                kept.cap = cap  # a use beyond a lower cap has no room until it ends
                rows[s] = kept
            else:
                rows[s] = TokenRow(cap, cap if lim.dropped else 0, lim.dropped)
        lim.rows = rows
        self.rate_settings.setdefault(key, []).append(
            Setting(max_leases, lim.period, self.rate_lifetimes)
        )
        self.last_kind = "set_rate_limit"

    # most examples start with a limit, so that acquires meet one often
    @initialize(
        limits=st.lists(
            st.tuples(
                st.sampled_from(EVENT_TYPES),
                st.sampled_from(RATE_MAX_LEASES),
                st.sampled_from(RATE_PERIODS),
            ),
            max_size=2,
        )
    )
    def start_rate_limits(self, limits: list[tuple[str, int, int]]) -> None:
        for key, max_leases, period in limits:
            self.set_rate_limit(0, key, max_leases, period)

    @precondition(lambda self: bool(self.rate_limits))
    @rule(c=st.integers(0, N_CONNS - 1), key=st.sampled_from(EVENT_TYPES))
    def clear_rate_limit(self, c: int, key: str) -> None:
        """The limit and its tokens go (false when there was none); the key's
        items are leased without limit again."""
        was = self.conns[c].execute("SELECT retry_rate_limit_clear(%s)", [key]).fetchone()
        assert was == (key in self.rate_limits,)
        self.rate_limits.pop(key, None)
        self.last_kind = "clear_rate_limit"

    @precondition(lambda self: bool(self.seen_ids))
    @rule(c=st.integers(0, N_CONNS - 1), data=st.data())
    def collide(self, c: int, data: st.DataObject) -> None:
        """An explicit id in the guide's INSERT, even the owner's: one of an item
        that is live, finished or archived is refused (23505), one the sequence
        has not handed out yet too (22023), and nothing is written (the
        invariants see no new row). (An id whose item cleanup deleted without
        archiving is not drawn: it is nowhere to collide with.)"""
        taken = sorted(set(self.items) | self.archived)
        reused = data.draw(st.sampled_from([*taken, None]), label="explicit id")
        conn = self.conns[c]
        id_sql = (
            "%s"
            if reused is not None
            else ("(SELECT last_value FROM daz_retry_queue_id_seq) + 1000")
        )
        try:
            conn.execute(
                f"INSERT INTO daz_retry_queue (id, event_type, event_data)"  # type: ignore[arg-type]
                f" VALUES ({id_sql}, 'alpha', '{{}}')",
                [reused] if reused is not None else [],
            )
        except psycopg.Error as err:
            assert err.sqlstate == ("23505" if reused is not None else "22023"), str(err)
        else:
            raise AssertionError(f"explicit id {reused} accepted")
        self.last_kind = "collide"

    @precondition(lambda self: bool(self.items))
    @rule(
        c=st.integers(0, N_CONNS - 1),
        role=st.sampled_from([None, "retryq_producer", "retryq_worker", "retryq_admin"]),
        when=st.sampled_from([-7200, -1, 1, 7200, "infinity", "-infinity"]),
    )
    def move_the_clock(self, c: int, role: str | None, when: int | str) -> None:
        """Only the server moves the clock: a group role's p_now away from the
        server's time is refused (42501 naming now), the infinities for
        everyone, the owner included (22023); nothing changes."""
        if role is None and not isinstance(when, str):
            return  # the owner may: every other rule does it
        call = {
            None: "SELECT count(*) FROM acquire_retry_items('w1', 4, 60, %s)",
            "retryq_worker": "SELECT count(*) FROM acquire_retry_items('w1', 4, 60, %s)",
            "retryq_producer": "SELECT enqueue_retry_item('alpha', '{}', p_now => %s)",
            "retryq_admin": "SELECT count(*) FROM cleanup_retry_queue(0, p_now => %s)",
        }[role]
        at: Any = when if isinstance(when, str) else self.now + dt.timedelta(seconds=when)
        conn = self.conns[c]
        if role:
            conn.execute(f"SET ROLE {role}")  # type: ignore[arg-type]
        try:
            conn.execute(call, [at])  # type: ignore[arg-type]
        except psycopg.Error as err:
            expected = "22023" if isinstance(when, str) else "42501"
            assert (err.sqlstate, err.diag.column_name) == (expected, "now"), str(err)
        else:
            raise AssertionError(f"{role or 'the owner'} moved the clock to {at}")
        finally:
            conn.execute("RESET ROLE")
        self.last_kind = "move_the_clock"

    @precondition(lambda self: bool(self.items))
    @rule(secs=st.sampled_from([1, 2, 5, 10, 31, 301, 3600, 86400, 200000]))
    def advance(self, secs: int) -> None:
        self.now += dt.timedelta(seconds=secs)
        self.last_kind = "advance"

    # -- the database agrees with the model, and the invariants hold ------------

    @invariant()
    def database_matches_model(self) -> None:
        rows = self.conns[0].execute(ROW_SQL).fetchall()
        db_ids = {r[0] for r in rows}
        assert len(db_ids) == len(rows), f"an id is in the queue twice after {self.last_kind}"
        model_ids = set(self.items)
        appeared = db_ids - model_ids
        vanished = model_ids - db_ids
        assert not appeared, f"rows {appeared} appeared after {self.last_kind}"
        assert not vanished, f"rows {vanished} vanished after {self.last_kind}"
        leased: dict[int, str] = {}
        for (
            item_id,
            status,
            retry_count,
            max_retries,
            next_retry_at,
            locked_by,
            locked_until,
            priority,
            finished_at,
            code,
            last_retryable,
        ) in rows:
            it = self.items[item_id]
            # invariants that hold whatever the model says
            assert 0 <= retry_count <= max_retries, f"item {item_id}: retry_count {retry_count}"
            assert (status == "processing") == (locked_by is not None), item_id
            if status == "dead_letter":
                assert retry_count >= max_retries or last_retryable is False, (
                    f"item {item_id} is a dead letter with budget left and a retryable error"
                )
            if locked_by is not None:
                leased[item_id] = locked_by
            assert item_id not in self.completed_ever or status == "completed", (
                f"completed item {item_id} is {status} again"
            )
            # the model, field by field
            got = {
                "status": status,
                "retry_count": retry_count,
                "next_retry_at": next_retry_at,
                "locked_by": locked_by,
                "locked_until": locked_until,
                "priority": priority,
                "finished_at": finished_at,
            }
            want = {
                "status": it.status,
                "retry_count": it.retry_count,
                "next_retry_at": it.next_retry_at,
                "locked_by": it.locked_by,
                "locked_until": it.locked_until,
                "priority": it.priority,
                "finished_at": it.finished_at,
            }
            assert got == want, f"item {item_id} after {self.last_kind}: db {got} model {want}"
            if it.status == "dead_letter":
                assert (it.dead_reason == "permanent") == (last_retryable is False), item_id
                assert code == it.last_code, item_id
        twins = (
            self.conns[0]
            .execute(
                "SELECT dedupe_key FROM daz_retry_queue WHERE status IN ('pending', 'processing')"
                " AND dedupe_key IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
            )
            .fetchall()
        )
        assert not twins, f"two live items hold one dedupe key after {self.last_kind}"
        archived = {r[0] for r in self.conns[0].execute("SELECT id FROM daz_retry_queue_archive")}
        assert archived == self.archived, "archive differs from the model"
        limits: dict[str, tuple[str, int, dt.timedelta, list[Any]]] = {}
        for key, plugin, n, period in self.conns[0].execute(
            "SELECT event_type, plugin_name, max_leases, period FROM _retryq_rate_limit"
        ):
            limits[key] = (plugin, n, period, [])
        for key, slot, *row in self.conns[0].execute(
            "SELECT event_type, slot, cap, used, nullif(used_at, '-infinity'),"
            " nullif(prev_used_at, '-infinity') FROM _retryq_rate_token ORDER BY 1, 2"
        ):
            limits[key][3].append((slot, *row))
        assert limits == {
            key: (
                "",
                lim.max_leases,
                lim.period,
                [(s, *lim.rows[s].as_tuple()) for s in sorted(lim.rows)],
            )
            for key, lim in self.rate_limits.items()
        }, f"rate limits or token rows differ from the model after {self.last_kind}"

    @invariant()
    def rate_limits_hold(self) -> None:
        """No window of one period holds more leases of a key than its limit."""
        excess = self._window_excess()
        assert excess is None, f"after {self.last_kind}: {excess}"

    @precondition(lambda self: bool(self.items))
    @invariant()
    def next_retry_at_follows_the_formula(self) -> None:
        # Independent of the model's state: a pending item whose last event was
        # a failure is due exactly backoff(retry_count) after that failure.
        rows = (
            self.conns[0]
            .execute(
                "SELECT id, retry_count, retry_delay_seconds, backoff_multiplier,"
                " max_retry_delay_seconds, next_retry_at,"
                " (error_history -> -1 ->> 'failed_at')::timestamptz"
                " FROM daz_retry_queue WHERE status = 'pending' AND retry_count > 0"
                " AND error_history -> -1 ->> 'code' IS DISTINCT FROM 'lease_expired'"
                " AND last_attempted_at IS NOT NULL"
            )
            .fetchall()
        )
        for item_id, k, delay, mult, cap, due, failed_at in rows:
            it = self.items[item_id]
            if it.last_code == LEASE_CODE or failed_at is None or it.due_by_caller:
                continue
            assert due == failed_at + backoff(k, delay, mult, cap), (
                f"item {item_id}: retry {k} due {due}, failed {failed_at}"
            )


@contextlib.contextmanager
def bound_model(dsn: str) -> Iterator[type[QueueModel]]:
    conns = tuple(psycopg.connect(dsn, autocommit=True) for _ in range(N_CONNS))
    conns[0].execute(
        "CREATE OR REPLACE FUNCTION _retryq_rate_rows() RETURNS integer"
        f" LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS 'SELECT {RATE_ROWS}'"
    )
    try:
        yield type("BoundQueueModel", (QueueModel,), {"conns": conns})
    finally:
        for conn in conns:
            conn.close()


def test_queue_matches_model(dsn: str) -> None:
    with bound_model(dsn) as machine:
        # three times the profile's examples: this is the test the profile is for
        base = settings()
        run_state_machine_as_test(
            machine, settings=settings(base, max_examples=3 * base.max_examples)
        )


# --- failing examples hypothesis found, kept as plain tests ------------------------


def _spec(**kw: Any) -> dict[str, Any]:
    base = {
        "event_type": "alpha",
        "priority": 1,
        "max_retries": 0,
        "retry_delay_seconds": 0,
        "backoff_multiplier": 1.0,
        "max_retry_delay_seconds": 0,
        "delay_seconds": 0,
    }
    return {**base, **kw}


def test_regression_buried_lease_does_not_use_up_the_batch(dsn: str) -> None:
    # Found by the model: a batch of 1 met a spent expired lease first, buried
    # it, and returned nothing although item 2 was due (and with another item
    # at a lower priority, returned that one instead: the wrong priority).
    with bound_model(dsn) as machine:
        state = machine()
        state.enqueue(batch=False, c=0, specs=[_spec()])
        state.enqueue(batch=False, c=0, specs=[_spec()])
        state.acquire(batch=1, c=0, lease=1, worker="w1")
        state.advance(secs=1)
        state.acquire(batch=1, c=0, lease=1, worker="w1")
        state.database_matches_model()


def test_regression_every_spent_lease_met_is_buried(dsn: str) -> None:
    # Found by the model: two spent expired leases ahead of a batch of 1; the
    # scan must bury both (neither can ever run again) before it gives up.
    with bound_model(dsn) as machine:
        state = machine()
        state.enqueue(batch=False, c=0, specs=[_spec()])
        state.enqueue(batch=False, c=0, specs=[_spec()])
        state.acquire(batch=2, c=0, lease=1, worker="w2")
        state.advance(secs=5)
        state.acquire(batch=1, c=2, lease=30, worker="w1")
        state.database_matches_model()


@pytest.mark.parametrize("types", [None, ["alpha"]])
def test_regression_an_expired_lease_keeps_its_place_in_the_batch(
    dsn: str, types: list[str] | None
) -> None:
    # An expired lease ahead of two pending items: the batch takes it over
    # first, in due order (the lighter statement, which leases only pending
    # items, must leave such a batch to the full one). The model caught the
    # mutant acquire_lean_skips_takeovers only through a routed call, which
    # no longer takes the lighter statement with an expired lease in view.
    with bound_model(dsn) as machine:
        state = machine()
        for _ in range(3):
            state.enqueue(batch=False, c=0, specs=[_spec(max_retries=3)])
        state.acquire(batch=1, c=0, lease=1, worker="w1")
        state.advance(secs=2)
        state.acquire(batch=3, c=0, lease=30, worker="w2", types=types)
        state.database_matches_model()


class Script:
    """Stands in for hypothesis's `data` in the rules: hands out the given
    values in the order the rule draws them."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        return self.values.pop(0)


# The rules draw, in order: in _pick (pick any: 1 means no, item id), then in
# _worker_for (use the holder: 1 means yes); requeue draws (how, filter value).


def test_regression_a_permanent_error_buries_at_once(dsn: str) -> None:
    # A mutant that retried permanent errors slipped past the ci profile in
    # some runs: this path is now fixed as a script through the model.
    with bound_model(dsn) as machine:
        state = machine()
        state.start(specs=[_spec(max_retries=3)], batch=False)
        state.acquire(c=0, worker="w1", batch=1, lease=30)
        state.fail(c=1, data=Script(1, 1, 1), retryable=False, code="E1")
        state.database_matches_model()


def test_regression_requeue_never_revives_a_completed_item(dsn: str) -> None:
    with bound_model(dsn) as machine:
        state = machine()
        state.start(specs=[_spec(max_retries=3), _spec(max_retries=3)], batch=True)
        state.acquire(c=0, worker="w1", batch=2, lease=30)
        state.complete(c=1, data=Script(1, 1, 1), many=False)
        state.fail(c=2, data=Script(1, 2, 1), retryable=False, code="E1")
        state.requeue(c=0, data=Script("event_type", "alpha"))
        state.database_matches_model()
        state.acquire(c=0, worker="w2", batch=2, lease=30, secs=1)
        state.database_matches_model()


def test_regression_rate_limit_tokens_go_to_the_most_urgent_takeover_included(dsn: str) -> None:
    # Scripted through the model, as the ci profile meets these paths only in
    # some runs: the token goes to the most urgent item of the key, frees
    # exactly one period after its use, and a takeover of an expired lease
    # takes one (the item behind it waits); a spent lease is buried without.
    with bound_model(dsn) as machine:
        state = machine()
        state.set_rate_limit(c=0, key="alpha", max_leases=1, period=2)
        state.start(specs=[_spec(max_retries=1), _spec(max_retries=1)], batch=True)
        state.acquire(c=0, worker="w1", batch=2, lease=1)
        assert [it.status for it in state.items.values()] == ["processing", "pending"]
        state.acquire(c=1, worker="w2", batch=2, lease=1, secs=1)  # no token until 2 s
        state.database_matches_model()
        state.acquire(c=1, worker="w2", batch=2, lease=1, secs=1)  # exactly one period on
        state.database_matches_model()
        assert [it.retry_count for it in state.items.values()] == [1, 0]  # taken over
        state.acquire(c=2, worker="w3", batch=2, lease=1, secs=1)  # spent: buried, no token
        state.database_matches_model()
        assert [it.status for it in state.items.values()] == ["dead_letter", "pending"]
        state.acquire(c=0, worker="w1", batch=2, lease=1, secs=1)
        state.database_matches_model()
        assert [it.status for it in state.items.values()] == ["dead_letter", "processing"]
        state.rate_limits_hold()


def test_regression_rate_limit_changes_through_the_model(dsn: str) -> None:
    # Alpha's items beyond its tokens do not fill the batch: beta's item of
    # the same priority is leased meanwhile; a limit lowered and raised again
    # within one period gives the re-created token its last use back.
    with bound_model(dsn) as machine:
        state = machine()
        state.set_rate_limit(c=0, key="alpha", max_leases=2, period=5)
        state.start(
            specs=[_spec(priority=5)] * 4 + [_spec(event_type="beta", priority=5)], batch=True
        )
        state.acquire(c=0, worker="w1", batch=4, lease=30)
        assert [i for i, it in state.items.items() if it.status == "processing"] == [1, 2, 5]
        state.set_rate_limit(c=1, key="alpha", max_leases=1, period=5)
        state.set_rate_limit(c=1, key="alpha", max_leases=2, period=5)
        state.acquire(c=0, worker="w1", batch=1, lease=30, secs=1)
        state.database_matches_model()
        assert state.items[3].status == "pending"  # slot 2 came back used
        state.rate_limits_hold()
        state.clear_rate_limit(c=2, key="alpha")
        state.acquire(c=0, worker="w1", batch=4, lease=30)
        state.database_matches_model()
        assert all(it.status == "processing" for it in state.items.values())


def test_regression_rate_limit_skips_a_key_without_tokens(dsn: str) -> None:
    # A key with no token free is passed over: beta's item, behind alpha's of
    # the same priority, is leased meanwhile.
    with bound_model(dsn) as machine:
        state = machine()
        state.set_rate_limit(c=0, key="alpha", max_leases=1, period=5)
        state.start(
            specs=[_spec(priority=5)] * 2 + [_spec(event_type="beta", priority=5)], batch=True
        )
        state.acquire(c=0, worker="w1", batch=1, lease=30)
        state.acquire(c=1, worker="w2", batch=1, lease=30)
        state.database_matches_model()
        assert [it.locked_by for it in state.items.values()] == ["w1", None, "w2"]


def test_regression_rate_limit_a_takeover_behind_an_item_takes_its_own_token(dsn: str) -> None:
    # Item 1 is pending again (released) ahead of item 2's expired lease: the
    # one token goes to item 1, and the takeover of item 2 waits for another.
    with bound_model(dsn) as machine:
        state = machine()
        state.start(specs=[_spec(max_retries=2)] * 2, batch=True)
        state.acquire(c=0, worker="w1", batch=2, lease=1)
        state.release(c=0, data=Script(1, 1, 1, []))
        state.set_rate_limit(c=1, key="alpha", max_leases=1, period=5)
        state.acquire(c=2, worker="w2", batch=2, lease=30, secs=1)
        state.database_matches_model()
        assert [(it.locked_by, it.retry_count) for it in state.items.values()] == [
            ("w2", 0),
            ("w1", 0),
        ]
        state.rate_limits_hold()


def test_regression_rate_limit_rows_of_several_tokens(dsn: str) -> None:
    # A limit of 3 in RATE_ROWS = 2 rows: slot 1 holds 2 tokens, slot 2 one.
    # A row takes leases up to its cap per use, a batch spills into the next
    # row, and a row's next use starts a period after its latest lease (not
    # its first): slot 1, used at 0 s and 1 s, is free at 6 s, not at 5 s.
    with bound_model(dsn) as machine:
        state = machine()
        state.set_rate_limit(c=0, key="alpha", max_leases=3, period=5)
        state.start(specs=[_spec()] * 4, batch=True)
        state.acquire(c=0, worker="w1", batch=1, lease=30)
        state.database_matches_model()
        state.acquire(c=1, worker="w2", batch=3, lease=30, secs=1)  # slot 1's last, slot 2
        state.database_matches_model()
        assert [r.as_tuple()[:2] for r in state.rate_limits["alpha"].rows.values()] == [
            (2, 2),
            (1, 1),
        ]
        state.acquire(c=2, worker="w3", batch=1, lease=30, secs=4)  # 5 s: slot 1 still in use
        state.database_matches_model()
        assert state.items[4].status == "pending"
        state.acquire(c=2, worker="w3", batch=1, lease=30, secs=1)  # 6 s
        state.database_matches_model()
        assert state.items[4].status == "processing"
        state.rate_limits_hold()


def test_regression_rate_limit_a_batch_goes_whole_to_a_row_with_room(dsn: str) -> None:
    # A limit of 4 in 2 rows of 2: slot 1 has room for one after the first
    # lease, so a batch of two goes whole to slot 2; the next single lease
    # fills slot 1.
    with bound_model(dsn) as machine:
        state = machine()
        state.set_rate_limit(c=0, key="alpha", max_leases=4, period=5)
        state.start(specs=[_spec()] * 4, batch=True)
        state.acquire(c=0, worker="w1", batch=1, lease=30)
        state.acquire(c=1, worker="w2", batch=2, lease=30)
        state.database_matches_model()
        assert [r.used for r in state.rate_limits["alpha"].rows.values()] == [1, 2]
        state.acquire(c=2, worker="w3", batch=1, lease=30)
        state.database_matches_model()
        assert [r.used for r in state.rate_limits["alpha"].rows.values()] == [2, 2]
        state.rate_limits_hold()
