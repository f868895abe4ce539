"""A worker's settings: the config, overridden by keywords, checked once;
and its routing (which items it leases), which AsyncRetryWorker shares."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from retryq_py import _sql
from retryq_py.config import RetryConfig

_NO_NUL = "which PostgreSQL cannot store in text"
# acquire_retry_items' bounds (see _retryq_check_routing, _retryq_check_worker):
# a setting beyond one fails every acquire, so it is refused when the worker is made
MAX_ROUTED = 1000
MAX_WORKER_ID = 200
MAX_LEASE = 86400  # lock_timeout, seconds
MAX_RETENTION_DAYS = 36500  # _retryq_cleanup_cutoff


def _check_name(field: str, name: str, hint: str = "") -> None:
    """ValueError for a name the SQL refuses as blank, or holding NUL."""
    if "\x00" in name:
        raise ValueError(f"{field} {name!r} contains U+0000 (NUL), {_NO_NUL}")
    if _sql.is_blank(name):
        raise ValueError(
            f"{field} {name!r} is blank (whitespace or invisible characters only)"
            + (f": {hint}" if hint else "")
        )


def _whole(field: str, value: object, low: int, high: int) -> int:
    """An integer setting within the SQL's bounds (_sql.whole: a whole float
    is taken)."""
    number = _sql.whole(value)
    if number is None:
        raise ValueError(f"{field} must be an integer, got {value!r}")
    if not low <= number <= high:
        raise ValueError(f"{field} must be between {low} and {high}, got {number}")
    return number


def _duration(field: str, value: object, *, zero: bool = False) -> float:
    """A duration setting: a finite number of seconds, positive (or 0 when `zero`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        rule = "at least 0" if zero else "positive"
        raise ValueError(f"{field} must be a finite number of seconds, {rule}, got {value!r}")
    return float(value)


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
        is one acquire_retry_items would refuse at every call (the worker
        would then retry forever): a blank event type or plugin name other
        than '' (whitespace or invisible characters only, _retryq_blank's
        rule), None among the plugin names, more than 1000 of either, or
        U+0000 (which the SQL could not even be sent)."""
        if not handlers:
            raise ValueError(
                "no handlers: a worker leases only the event types it has handlers for;"
                " register at least one"
            )
        for event_type in handlers:
            if not isinstance(event_type, str):
                raise TypeError(f"event_types: handler key {event_type!r} is not a string")
            _check_name("event_types: handler key", event_type)
        plugins: tuple[str, ...] | None = None
        if plugin_names is not None:
            if isinstance(plugin_names, str):
                raise TypeError(f"plugin_names must be a list of names, not {plugin_names!r}")
            plugins = tuple(plugin_names)
            if not plugins:
                raise ValueError("plugin_names is empty: give None for every plugin")
            for plugin in plugins:
                if not isinstance(plugin, str):
                    raise ValueError(
                        f"plugin_names: {plugin!r} is not a name (use '' for items without"
                        " a plugin)"
                    )
                if plugin:
                    _check_name("plugin_names: plugin name", plugin, "use '' for items without one")
        event_types = None if all_event_types else tuple(sorted(handlers))
        for field, names in (("event_types", event_types), ("plugin_names", plugins)):
            if names is not None and len(names) > MAX_ROUTED:
                raise ValueError(
                    f"{field}: {len(names)} given, acquire_retry_items takes at most {MAX_ROUTED}"
                )
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
        count = _whole("worker_count", count, 1, 1_000_000)
        if not 1 <= _duration("lock_timeout", lock) <= MAX_LEASE:
            raise ValueError(
                f"lock_timeout must be between 1 and {MAX_LEASE} seconds, got {lock:g}"
            )
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
        # what acquire_retry_items, extend_retry_lock and cleanup_retry_queue
        # refuse (22023, 22003) is refused now, naming the setting: at run
        # time it would fail every call, and the worker would stop on it
        if not isinstance(settings.worker_id, str):
            raise ValueError(f"worker_id must be a string, got {settings.worker_id!r}")
        _check_name("worker_id", settings.worker_id)
        if len(settings.worker_id) > MAX_WORKER_ID:
            raise ValueError(
                f"worker_id must be at most {MAX_WORKER_ID} characters,"
                f" got {len(settings.worker_id)}"
            )
        settings = replace(
            settings,
            batch_size=_whole("batch_size", settings.batch_size, 1, 1000),
            max_snoozes=_whole("max_snoozes", max_snoozes, 0, 10000),
            retention_days=_whole("retention_days", settings.retention_days, 0, MAX_RETENTION_DAYS),
        )
        for field in ("poll_interval", "statement_deadline", "ack_interval", "max_backoff"):
            _duration(field, getattr(settings, field))
        for field in ("grace_period", "cleanup_interval"):
            _duration(field, getattr(settings, field), zero=True)
        _duration("connect_timeout", connect_timeout)
        if handler_timeout is not None:
            _duration("handler_timeout", handler_timeout)
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
