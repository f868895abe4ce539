"""The typed rows retryq's statements return, and NewItem, add_many's input.

psycopg's class_row builds these from the columns named in statements.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

from retryq_py._sql.params import Seconds, seconds

# JSON values as psycopg parses jsonb: dict, list, str, int, float, bool.
JSON = Any

# the most snoozes a count can hold: snooze_retry_item's max_snoozes bound
SNOOZE_BOUND = 10000


@dataclass(frozen=True)
class RetryQueueItem:
    """A leased item, as acquire_retry_items returns it.

    The first ten fields are the integration guide's struct, by the same
    names; channel_name, plugin_name and correlation_id are '' when unset, as
    in the guide. event_data and event_metadata arrive parsed.
    """

    id: int
    event_id: UUID
    event_type: str
    channel_name: str
    plugin_name: str
    event_data: JSON
    retry_count: int
    max_retries: int
    priority: int
    correlation_id: str
    event_metadata: dict[str, JSON]
    tags: list[str]
    created_at: datetime
    next_retry_at: datetime
    locked_until: datetime
    error_message: str | None
    last_error_code: str | None
    # The lease's grant time: pass it to complete, fail, snooze and
    # extend_lock (leased_at=...) to fence them to this lease. None for an
    # item built by hand: then they act on any lease of the worker id.
    leased_at: datetime | None = None

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure of this attempt makes the item a dead letter."""
        return self.retry_count >= self.max_retries

    @property
    def snoozes(self) -> int:
        """How many times this item was snoozed (snooze_retry_item counts
        them in event_metadata["retryq_snoozes"]; a requeue starts again at 0)."""
        return snooze_count(self.event_metadata)


def snooze_count(metadata: Any) -> int:
    """event_metadata["retryq_snoozes"] as a count, by snooze_retry_item's
    rule: a whole number from 0 to 10000 (all retryq writes), else 0 (a
    producer's value under the key, or none)."""
    n = metadata.get("retryq_snoozes") if isinstance(metadata, dict) else None
    if isinstance(n, bool) or not isinstance(n, int | float | Decimal):
        return 0
    if isinstance(n, Decimal) and not n.is_finite():  # Decimal NaN cannot compare
        return 0
    if not 0 <= n <= SNOOZE_BOUND or n != int(n):  # NaN and inf fail the bounds
        return 0
    return int(n)


@dataclass(frozen=True)
class QueueEntry:
    """One row of daz_retry_queue, every column (for inspection); or, from
    admin.item_show, an item that cleanup moved to daz_retry_queue_archive,
    with archived_at set (None for an item still in the queue)."""

    id: int
    event_id: UUID
    event_type: str
    channel_name: str | None
    plugin_name: str | None
    event_data: JSON
    event_metadata: dict[str, JSON]
    retry_count: int
    max_retries: int
    retry_delay_seconds: float
    backoff_multiplier: float
    max_retry_delay_seconds: float
    retry_jitter: float
    priority: int
    correlation_id: str | None
    tags: list[str]
    status: str
    error_message: str | None
    last_error_code: str | None
    error_history: list[dict[str, JSON]]
    created_at: datetime
    next_retry_at: datetime
    last_attempted_at: datetime | None
    completed_at: datetime | None
    dead_lettered_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None
    dedupe_key: str | None = None
    archived_at: datetime | None = None


class _Ids(NamedTuple):
    id: int
    event_id: UUID


class Enqueued(_Ids):
    """What add returns: unpacks as `id, event_id = queue.add(...)`.

    `deduplicated` is True when nothing was added and the item returned was
    already in the queue: a live item holding the same dedupe_key, or (add
    with event_id) the item with that event id. It is not part of the tuple:
    equality and unpacking see (id, event_id) only.
    """

    deduplicated: bool = False

    def __new__(cls, id: int, event_id: UUID, deduplicated: bool = False) -> Enqueued:
        self = super().__new__(cls, id, event_id)
        if deduplicated:
            self.deduplicated = True
        return self

    def __repr__(self) -> str:
        return (
            f"Enqueued(id={self.id!r}, event_id={self.event_id!r},"
            f" deduplicated={self.deduplicated!r})"
        )


@dataclass(frozen=True)
class StatsRow:
    """One row of the daz_retry_queue_stats view."""

    status: str
    event_type: str
    plugin_name: str | None
    item_count: int
    avg_retry_count: float
    max_retry_count: int
    oldest_created_at: datetime
    newest_created_at: datetime
    leased_count: int
    # the group's items wait for retry_queue_resume (pending and processing only)
    paused: bool = False


@dataclass(frozen=True)
class CleanupResult:
    deleted_count: int
    archived_count: int


@dataclass(frozen=True)
class Due:
    """Whether any item is pending or processing; seconds until the next
    pending one is due (negative when overdue, None when none is pending); and
    how long the oldest due item nobody holds has waited, in seconds (0 when
    none: an expired lease counts as due)."""

    active: bool
    seconds_until_due: float | None
    oldest_due_age_seconds: float = 0.0

    @property
    def due_now(self) -> bool:
        """Whether anything is due now: a pending item whose time has come
        (one an open circuit holds back included, one a spent rate limit
        holds back not) or an expired lease."""
        overdue = self.seconds_until_due is not None and self.seconds_until_due <= 0
        return overdue or self.oldest_due_age_seconds > 0


@dataclass(frozen=True)
class NewItem:
    """One item for add_many; the fields and defaults of RetryQueue.add."""

    event_type: str
    data: JSON
    channel: str | None = None
    plugin: str | None = None
    metadata: Mapping[str, JSON] | None = None
    max_retries: int = 3
    retry_delay: Seconds = 60
    backoff_multiplier: float = 2.0
    priority: int = 5
    correlation_id: str | None = None
    tags: Sequence[str] | None = None
    delay: Seconds = 0
    max_retry_delay: Seconds = 86400
    retry_jitter: float = 0.0
    dedupe_key: str | None = None

    def params(self) -> dict[str, Any]:
        """The enqueue function's parameters, by name without the p_ prefix."""
        return {
            "event_type": self.event_type,
            "event_data": self.data,
            "channel_name": self.channel,
            "plugin_name": self.plugin,
            "event_metadata": dict(self.metadata) if self.metadata is not None else {},
            "max_retries": self.max_retries,
            "retry_delay_seconds": seconds(self.retry_delay, "retry_delay"),
            "backoff_multiplier": self.backoff_multiplier,
            "priority": self.priority,
            "correlation_id": self.correlation_id,
            "tags": list(self.tags) if self.tags is not None else [],
            "delay_seconds": seconds(self.delay, "delay"),
            "max_retry_delay_seconds": seconds(self.max_retry_delay, "max_retry_delay"),
            "retry_jitter": self.retry_jitter,
            "dedupe_key": self.dedupe_key,
        }
