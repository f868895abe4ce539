"""The ledger: every item a worker holds, from its lease to its written outcome.

Lanes, handler threads, the listener, the heartbeat and the shutdown all
read and change this state, so it has one owner (this class) and one lock,
taken only for a few dict and list operations: no I/O, no callbacks.

An item's way through it: `claim` (a lane reserves room for it), `hold`
(leased; queued for the handler threads), `begin` (a handler runs it),
`finish` (its outcome waits), `claim` (a lane writes it), `settle`
(written: forgotten and counted). Items not started at
a stop are handed back by `take_unstarted`, those still running after the
grace period by `take_late`, and those waiting behind handlers that all ran
past handler_timeout by `take_stranded` (the heartbeat releases them).
"""

from __future__ import annotations

import logging
import queue as stdqueue
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from retryq_py._sql import RetryQueueItem
from retryq_py.worker.events import EventKind, Outcome, WorkerCounts

log = logging.getLogger("retryq.worker")

_COUNTED_AS: dict[EventKind, str] = {
    "completed": "processed",
    "failed": "failed",
    "dead_lettered": "dead_lettered",
    "released": "released",
    "lease_lost": "lease_lost",
    "snoozed": "snoozed",
}


class Ledger:
    """Held items, running handlers, outcomes waiting to be written, counts."""

    def __init__(
        self,
        *,
        batch_size: int,
        capacity: int,
        stopping: threading.Event,
        lease: float = float("inf"),
        slots: int | None = None,
        handler_timeout: float | None = None,
    ) -> None:
        self._batch_size = batch_size
        self._lease = lease  # seconds a lease lasts from its last renewal
        # handlers that run at once (worker_count), and how long one may run
        # (seconds): when every slot holds a handler past it, nothing waiting
        # can start (see stuck)
        self._slots = slots
        self._handler_timeout = handler_timeout
        self._capacity = capacity
        self._stopping = stopping
        self._lock = threading.Lock()
        # to the handler threads: a C queue, no lock of ours on the way
        self._handoff: stdqueue.SimpleQueue[RetryQueueItem | None] = stdqueue.SimpleQueue()
        self._held: dict[int, tuple[RetryQueueItem, float]] = {}  # id -> (item, leased at)
        # (id, locked_until) -> when its handler started: by lease, since a
        # copy of an item may still run when its lease ran out and this
        # worker's acquire took the item over (the newer copy runs too)
        self._running: dict[tuple[int, datetime], float] = {}
        self._returned: list[RetryQueueItem] = []  # taken by a thread after stop
        self._outcomes: list[Outcome] = []  # not yet claimed by a lane
        # leases whose outcome waits or is being written: a renewal refused
        # for them is no lost lease (the outcome may be written already; if
        # the lease was lost, the flush says so)
        self._answered: set[tuple[int, datetime]] = set()
        # leases taken up after a lost reply: (id, locked_until), until the
        # lane whose reply was only slow holds them too (it then skips them)
        self._adopted: set[tuple[int, datetime]] = set()
        # while an adoption asks the queue: the leases settled meanwhile
        self._settled_since: set[tuple[int, datetime]] | None = None
        self._reserved = 0  # items being leased by lanes right now
        self._notified = False  # a NOTIFY came: look for due items
        self._idle_exit = False  # exit_when: a lane found nothing left
        self.counts = WorkerCounts()  # written under the lock; read it live

    # -- lanes ------------------------------------------------------------------

    def room(self) -> tuple[int, bool]:
        """(how many items a lane may lease now, whether a NOTIFY came since
        the last call). Outcomes about to be written free their slots; leases
        come in half batches at least, so that acks and leases stay batched."""
        with self._lock:
            notified, self._notified = self._notified, False
            held = len(self._held)
            waiting = len(self._outcomes)
            free = self._capacity - held - self._reserved + waiting
            if (free < max(1, self._batch_size // 2) and held > waiting) or self._stuck(
                time.monotonic()
            ):
                free = 0
        return free, notified

    def notify(self) -> None:
        with self._lock:
            self._notified = True

    def claim(self, *, force: bool, acquire: int, ack_interval: float) -> tuple[list[Outcome], int]:
        """What a lane writes now: the waiting outcomes (successes wait up to
        ack_interval to be batched, unless forced, leasing or a failure is
        among them) and how many items to lease: `acquire` at most, as many
        as capacity allows once the claimed outcomes are settled. Claimed
        outcomes are no other lane's to write; they stay held until `settle`
        (before `hold`, so held never passes capacity) or `unclaim`."""
        with self._lock:
            outcomes = self._outcomes
            if not outcomes or (
                not force
                and len(outcomes) < self._batch_size
                and all(o.ok for o in outcomes)
                and time.monotonic() - min(o.done_at for o in outcomes) < ack_interval
            ):
                outcomes = []  # not the list handlers append to
            else:
                self._outcomes = []  # handlers append to a new list
            # room() was asked without the lock held since: another lane may
            # have leased meanwhile, and capacity is a promise (see Settings)
            free = self._capacity - len(self._held) - self._reserved + len(outcomes)
            if self._idle_exit or (acquire and self._stuck(time.monotonic())):
                free = 0  # stuck: an item leased now could not start
            acquire = max(0, min(acquire, free))
            self._reserved += acquire
        return outcomes, acquire

    def replaced(self, outcomes: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
        """(outcomes to write, outcomes whose item is held under a newer
        lease). Call it after the outcomes in doubt are settled: an outcome
        not in doubt whose lease was replaced was never written, so its lease
        ended without it (ran out, and this worker's own acquire took the
        item over). Written, it would be refused (the outcome functions are
        fenced to its lease's grant time): counted lost without a write."""
        with self._lock:
            held = self._held
            gone = [
                o
                for o in outcomes
                if o.item.id in held and held[o.item.id][0].locked_until != o.item.locked_until
            ]
        if not gone:
            return outcomes, []
        return [o for o in outcomes if all(o is not g for g in gone)], gone

    def unclaim(self, outcomes: list[Outcome], acquire: int) -> None:
        """The write failed: the outcomes wait for the next try."""
        with self._lock:
            self._outcomes = outcomes + self._outcomes
            self._reserved -= acquire

    def hold(
        self,
        items: list[RetryQueueItem],
        reserved: int,
        rejected: Iterable[Outcome] = (),
        *,
        adopt: bool = False,
    ) -> None:
        """Leased (`reserved` was claimed for them): queue them for the handlers.
        `rejected`: leased items that will not run (they could not be decoded),
        held with their outcome already waiting to be written. `adopt`: items
        found leased after a lost reply; those held meanwhile are left out.

        A lease is told apart by its locked_until as the acquire granted it:
        an item whose outcome is still being written may be leased again
        meanwhile (a failure due at once, leased by the same flush or another
        lane's), and the new lease replaces the old one here; the old one's
        `settle` then leaves it be (see `settle`)."""
        now = time.monotonic()
        with self._lock:
            self._reserved -= reserved
            held = self._held

            def same_lease(item: RetryQueueItem) -> bool:
                entry = held.get(item.id)
                return entry is not None and entry[0].locked_until == item.locked_until

            if adopt:
                # neither held now nor settled since the queue was asked
                gone = self._settled_since or set()
                self._settled_since = None
                items = [
                    i for i in items if not same_lease(i) and (i.id, i.locked_until) not in gone
                ]
                rejected = [
                    o
                    for o in rejected
                    if not same_lease(o.item) and (o.item.id, o.item.locked_until) not in gone
                ]
                self._adopted.update((item.id, item.locked_until) for item in items)
                self._adopted.update((o.item.id, o.item.locked_until) for o in rejected)
            elif self._adopted:
                # a lane's own lease that an adoption took up first (the same
                # lease: the same locked_until), even if it already ran: once
                taken = self._adopted
                keep = [item for item in items if (item.id, item.locked_until) not in taken]
                kept_rejected = [
                    o for o in rejected if (o.item.id, o.item.locked_until) not in taken
                ]
                taken.difference_update((item.id, item.locked_until) for item in items)
                taken.difference_update((o.item.id, o.item.locked_until) for o in rejected)
                items, rejected = keep, kept_rejected
            for item in items:
                held[item.id] = (item, now)
            for outcome in rejected:
                held[outcome.item.id] = (outcome.item, now)
                self._outcomes.append(outcome)
                self._answered.add((outcome.item.id, outcome.item.locked_until))
        for item in items:
            self._handoff.put(item)

    def settle(self, items: Iterable[RetryQueueItem], tally: Mapping[EventKind, int]) -> None:
        """Written: forget the items' leases and count what became of them. A
        newer lease of the same item, held meanwhile, stays held: forgotten,
        it would run unrenewed, and an adoption would take it up a second time."""
        leases = [(item.id, item.locked_until) for item in items]
        with self._lock:
            held = self._held
            self._answered.difference_update(leases)
            for item_id, until in leases:
                entry = held.get(item_id)
                if entry is not None and entry[0].locked_until == until:
                    del held[item_id]
            if self._settled_since is not None:
                self._settled_since.update(leases)
            counts = self.counts
            for kind, n in tally.items():
                name = _COUNTED_AS[kind]
                setattr(counts, name, getattr(counts, name) + n)

    def ack_deadline(self, ack_interval: float) -> float:
        """When the oldest waiting outcome must be written."""
        with self._lock:
            if not self._outcomes:
                return float("inf")
            return min(o.done_at for o in self._outcomes) + ack_interval

    def finish_if_idle(self) -> bool:
        """exit_when: True (and from now on leases nothing) if nothing is
        held or being leased. Decided under the lock lanes reserve leases
        under, so no lane leases after it."""
        with self._lock:
            if self._held or self._outcomes or self._reserved or not self._handoff.empty():
                return False
            self._idle_exit = True
        return True

    @property
    def idle_exit(self) -> bool:
        return self._idle_exit

    # -- handler threads ----------------------------------------------------------

    def take(self) -> RetryQueueItem | None:
        """The next item to run; None when the thread is to end."""
        return self._handoff.get()

    def end_handlers(self, threads: int) -> None:
        for _ in range(threads):
            self._handoff.put(None)

    def begin(self, item: RetryQueueItem) -> bool:
        """False after a stop (the item goes back unstarted) or when its lease
        ran out while it waited (the heartbeat could not renew it: another
        worker may hold it now, so it is forgotten, counted as lease_lost)."""
        now = time.monotonic()
        with self._lock:
            if self._stopping.is_set():
                self._returned.append(item)
                return False
            held = self._held.get(item.id)
            # a newer lease of the item is held: this copy's lease is gone
            stale = held is not None and held[0].locked_until != item.locked_until
            lost = held is not None and not stale and now - held[1] >= self._lease
            if lost:
                del self._held[item.id]
            if lost or stale:
                self.counts.lease_lost += 1
            else:
                self._running[(item.id, item.locked_until)] = now
        if lost:
            log.warning(
                "item %d: its lease ran out before a handler was free (could the heartbeat"
                " reach the database?); not running it: another worker takes it over",
                item.id,
            )
        elif stale:
            log.warning("item %d: leased again before a handler was free; running it once", item.id)
        return not (lost or stale)

    def finish(self, outcome: Outcome) -> bool:
        """The outcome waits for a lane; True when a lane should wake for it:
        failures are written at once, and the first success starts the
        ack_interval clock."""
        with self._lock:
            if self._running.pop((outcome.item.id, outcome.item.locked_until), None) is not None:
                self._outcomes.append(outcome)
                self._answered.add((outcome.item.id, outcome.item.locked_until))
            # else: released after the grace period; the result is dropped
            return (
                not outcome.ok
                or self._stopping.is_set()
                or len(self._outcomes) in (1, self._batch_size)
            )

    # -- shutdown -------------------------------------------------------------------

    def take_unstarted(self) -> list[RetryQueueItem]:
        """Held items no handler has started (to release them). A copy of
        an item leased again meanwhile is left out: a release goes by id, and
        would give back the newer lease, maybe while its handler runs."""
        items: list[RetryQueueItem] = []
        with self._lock:
            while True:
                try:
                    item = self._handoff.get_nowait()
                except stdqueue.Empty:
                    break
                if item is not None:
                    items.append(item)
            items += self._returned
            self._returned = []
            held = self._held
            running = {i for i, _ in self._running}
            items = [
                i
                for i in items
                if i.id in held
                and held[i.id][0].locked_until == i.locked_until
                and i.id not in running
            ]
        return items

    def put_back_unstarted(self, items: list[RetryQueueItem]) -> None:
        """Their release failed: the next try releases them."""
        with self._lock:
            self._returned.extend(items)

    def busy(self) -> tuple[bool, bool]:
        """(a handler is running, something waits to be written or released:
        an outcome, an item handed back, or one held and not yet taken by a
        handler, such as those a take-up at the stop found leased)."""
        with self._lock:
            waiting = bool(self._outcomes or self._returned) or not self._handoff.empty()
            return bool(self._running), waiting

    def take_late(self) -> list[RetryQueueItem]:
        """Items still running after the grace period; their results, should
        they come, are dropped."""
        with self._lock:
            late = [self._held[i][0] for i in {i for i, _ in self._running} if i in self._held]
            self._running.clear()
        return late

    # -- heartbeat ---------------------------------------------------------------------

    def _stuck(self, now: float) -> bool:
        """Under the lock: every handler slot holds a handler that has run
        handler_timeout or more (its item's lease is no longer renewed), so
        no item waiting can start until one ends."""
        limit, running = self._handler_timeout, self._running
        if limit is None or self._slots is None or len(running) < self._slots:
            return False
        return all(now - started >= limit for started in running.values())

    def due_for_extension(
        self, now: float, age: float, limit: float | None
    ) -> dict[int, datetime | None]:
        """Items leased or extended `age` seconds ago or more, but not those
        whose handler has run `limit` seconds or more, nor, while every
        handler is stuck (see _stuck), those no handler has started (left to
        take_stranded, or to run out if their release failed): id -> the
        grant time of the held lease, to which its renewal is fenced."""
        with self._lock:
            stuck = self._stuck(now)
            due: dict[int, datetime | None] = {}
            for i, (item, at) in self._held.items():
                if now - at < age:
                    continue
                # the held lease's handler (an older copy's lease is gone)
                started = self._running.get((i, item.locked_until))
                if started is not None:
                    if limit is not None and now - started >= limit:
                        continue
                elif stuck and (i, item.locked_until) not in self._answered:
                    continue  # waits behind stuck handlers
                due[i] = item.leased_at
            return due

    def take_stranded(self, now: float) -> list[RetryQueueItem]:
        """While every handler is stuck (see _stuck): the held items none has
        started, taken from the handlers' queue, to be released so that
        another worker runs them (release_retry_items: no attempt spent);
        else []. `put_back` them if the release fails."""
        with self._lock:
            if not self._stuck(now):
                return []
            items: list[RetryQueueItem] = []
            while True:
                try:
                    item = self._handoff.get_nowait()
                except stdqueue.Empty:
                    break
                if item is None:  # the end of the handlers: theirs, put back
                    self._handoff.put(None)
                    break
                items.append(item)
            held = self._held
            return [
                i
                for i in items
                if i.id in held
                and held[i.id][0].locked_until == i.locked_until
                and (i.id, i.locked_until) not in self._running
            ]

    def put_back(self, items: list[RetryQueueItem]) -> None:
        """take_stranded's items whose release failed: for the handlers
        again (for the stop's release, once stopping)."""
        with self._lock:
            if self._stopping.is_set():
                self._returned.extend(items)
                return
        for item in items:
            self._handoff.put(item)

    def extended(self, due: Mapping[int, datetime | None], kept: set[int], now: float) -> set[int]:
        """Record the extensions made at `now`; returns the still held items
        whose lease was lost: not those acknowledged meanwhile, nor those
        whose outcome waits or is being written (the write may have ended
        the lease; the flush tells a lost one). A lease held since under
        the same id was not the one renewed: left as it is."""
        with self._lock:
            held = self._held

            def renewed(i: int) -> bool:
                return i in held and held[i][0].leased_at == due[i]

            for item_id in due:
                if item_id in kept and renewed(item_id):
                    held[item_id] = (held[item_id][0], now)
            return {
                i
                for i in due
                if i not in kept
                and renewed(i)
                and (i, held[i][0].locked_until) not in self._answered
            }

    def held_leases(self) -> tuple[list[int], list[datetime]]:
        """The held leases: item ids and granted locked_until (another lease
        of a held item is a newer one), and from now until the next
        hold(adopt=True) the leases settled meanwhile are remembered: an
        adoption's answer may be older than a lane's write."""
        with self._lock:
            self._settled_since = set()
            return list(self._held), [item.locked_until for item, _ in self._held.values()]

    def known_leases(self) -> tuple[list[int], list[datetime]]:
        """held_leases without the watch: for a renewal, which settles nothing."""
        with self._lock:
            return list(self._held), [item.locked_until for item, _ in self._held.values()]

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)
