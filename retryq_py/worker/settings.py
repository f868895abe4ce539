"""A worker's settings: the config, overridden by keywords, checked once;
and its routing (which items it leases), which AsyncRetryWorker shares."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from retryq_py import _sql
from retryq_py.config import RetryConfig

_NO_NUL = "which PostgreSQL cannot store in text"


def default_worker_id(name: str = "retryq") -> str:
    """NAME-HOSTNAME-PID, as the guide's `sql-plugin-<hostname>`, plus the pid."""
    return f"{name}-{socket.gethostname()}-{os.getpid()}"[:200]


@dataclass(frozen=True)
class Routing:
    """Which items a worker leases: acquire_retry_items' p_event_types and
    p_plugin_names (None: every one).

    `Routing.of(handlers)` takes the event types the handlers are for, so a
    worker never touches (nor dead-letters) the items of another service that
    shares the queue. With `all_event_types` it takes every event type, and an
    item without a handler is dead-lettered as `unknown event type`.
    `plugin_names` limits either to those plugins ("" for items without one).
    """

    event_types: tuple[str, ...] | None = None
    plugin_names: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        handlers: Mapping[str, object],
        *,
        all_event_types: bool = False,
        plugin_names: Iterable[str] | None = None,
    ) -> Routing:
        """ValueError when there is no handler (such a worker would lease
        nothing, or dead-letter everything), plugin_names is empty, or a name
        holds U+0000 (which the SQL could not even be sent)."""
        if not handlers:
            raise ValueError(
                "no handlers: a worker leases only the event types it has handlers for;"
                " register at least one"
            )
        plugins: tuple[str, ...] | None = None
        if plugin_names is not None:
            if isinstance(plugin_names, str):
                raise TypeError(f"plugin_names must be a list of names, not {plugin_names!r}")
            plugins = tuple(plugin_names)
            if not plugins:
                raise ValueError("plugin_names is empty: give None for every plugin")
        event_types = None if all_event_types else tuple(sorted(handlers))
        for field, names in (("event_types", event_types), ("plugin_names", plugins)):
            for name in names or ():
                if isinstance(name, str) and "\x00" in name:
                    raise ValueError(f"{field}: {name!r} contains U+0000 (NUL), {_NO_NUL}")
        return cls(event_types, plugins)

    @property
    def params(self) -> dict[str, list[str] | None]:
        """The statements' event_types and plugin_names parameters."""
        return {
            "event_types": None if self.event_types is None else list(self.event_types),
            "plugin_names": None if self.plugin_names is None else list(self.plugin_names),
        }

    def describe(self) -> str:
        """For a banner or a log line: 'every event type', 'a, b (plugin p)'."""
        text = "every event type" if self.event_types is None else ", ".join(self.event_types)
        if self.plugin_names is not None:
            text += " (plugins: " + ", ".join(p or "(none)" for p in self.plugin_names) + ")"
        return text


@dataclass(frozen=True)
class Settings:
    """Everything the parts of one worker read; none of them writes it."""

    config: RetryConfig
    worker_id: str
    schema: str | None
    worker_count: int
    batch_size: int
    poll_interval: float
    lock_timeout: float
    grace_period: float
    cleanup_interval: float
    retention_days: int
    ack_interval: float
    max_backoff: float
    connect_timeout: float
    handler_timeout: float | None
    statement_deadline: float
    lanes: int
    # which items it leases (see registry.Routing); every one by default
    routing: Routing
    max_snoozes: int = 100

    @classmethod
    def resolve(
        cls,
        config: RetryConfig | None,
        *,
        name: str = "retryq",
        worker_id: str | None = None,
        schema: str | None = None,
        worker_count: int | None = None,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        lock_timeout: float | None = None,
        grace_period: float | None = None,
        cleanup_interval: float | None = None,
        retention_days: int | None = None,
        ack_interval: float | None = None,
        max_backoff: float = 10.0,
        connect_timeout: float = 5.0,
        handler_timeout: float | None = None,
        statement_deadline: float | None = None,
        lanes: int | None = None,
        max_snoozes: int = 100,
        pool_max_size: int | None = None,
        routing: Routing | None = None,
    ) -> Settings:
        """Keywords win over the config; `pool_max_size` is the size of a
        caller's pool, which caps the default lanes."""
        cfg = config or RetryConfig()
        count = worker_count if worker_count is not None else cfg.worker_count
        lock = lock_timeout if lock_timeout is not None else cfg.lock_timeout
        if count < 1:
            raise ValueError(f"worker_count must be at least 1, got {count}")
        # Two transactions in flight by default: on a 2-core server 1, 2, 3
        # and 4 lanes drained about 5.7k, 8k, 6.6k and 6.7k no-op items/s (4
        # handler threads, batch 10); a third lane only adds contention.
        n_lanes = lanes if lanes is not None else min(2, count)
        if not 1 <= n_lanes <= 16:
            raise ValueError(f"lanes must be between 1 and 16, got {n_lanes}")
        if pool_max_size is not None and lanes is None:
            # your pool: leave a connection for the heartbeat and the rest
            n_lanes = max(1, min(n_lanes, pool_max_size - 1))
        settings = cls(
            config=cfg,
            worker_id=worker_id or default_worker_id(name),
            schema=schema,
            worker_count=count,
            batch_size=batch_size if batch_size is not None else cfg.batch_size,
            poll_interval=poll_interval if poll_interval is not None else cfg.poll_interval,
            lock_timeout=lock,
            grace_period=grace_period if grace_period is not None else cfg.grace_period,
            cleanup_interval=(
                cleanup_interval if cleanup_interval is not None else cfg.cleanup_interval
            ),
            retention_days=retention_days if retention_days is not None else cfg.retention_days,
            # Successes wait at most this long for a batched acknowledgement;
            # a tenth of the lease keeps it far from expiry.
            ack_interval=ack_interval if ack_interval is not None else min(0.1, lock / 10),
            max_backoff=max_backoff,
            # how long one attempt to get a connection may block the loops
            connect_timeout=connect_timeout,
            # A handler running longer stops being heartbeated: its lease runs
            # out and another worker takes the item over (a failed attempt).
            handler_timeout=handler_timeout,
            # A statement of the worker's own pool with no answer for this
            # long has its connection cut: far inside the lease, far above
            # what one short transaction takes.
            statement_deadline=(
                statement_deadline if statement_deadline is not None else max(1.0, lock / 2)
            ),
            lanes=n_lanes,
            routing=routing or Routing(),
            # an item snoozed more often becomes a dead letter (snooze_limit)
            max_snoozes=max_snoozes,
        )
        if "\x00" in settings.worker_id:
            raise ValueError(f"worker_id {settings.worker_id!r} contains U+0000 (NUL), {_NO_NUL}")
        if not 1 <= settings.batch_size <= 1000:
            raise ValueError(f"batch_size must be between 1 and 1000, got {settings.batch_size}")
        if isinstance(max_snoozes, bool) or not 0 <= max_snoozes <= 10000:
            raise ValueError(f"max_snoozes must be between 0 and 10000, got {max_snoozes}")
        if settings.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {settings.poll_interval}")
        if lock < 1:
            raise ValueError(f"lock_timeout must be at least 1 second, got {lock}")
        if settings.statement_deadline <= 0:
            raise ValueError(
                f"statement_deadline must be positive, got {settings.statement_deadline}"
            )
        return settings

    @property
    def lock_seconds(self) -> int:
        """The lease as SQL takes it: whole seconds, rounded up."""
        return _sql.whole_seconds(self.lock_timeout, "lock_timeout")

    @property
    def capacity(self) -> int:
        """Items held at most: one per thread, a batch waiting to start, and
        for each further lane two more (one being leased, one being run), so
        that a lane never has to write acknowledgements without leasing."""
        return self.batch_size * (2 * self.lanes - 1) + self.worker_count
