"""retryq: a durable retry queue that lives in PostgreSQL.

Each name below loads its module on first use (PEP 562), so that
`import retryq_py.cli` (every `retryq` command, `--version` and `--help`
too) does not load psycopg, the worker and the metrics before it needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retryq_py._session import SessionSettingError
    from retryq_py._sql import (
        CleanupResult,
        Enqueued,
        NewItem,
        QueueEntry,
        RawJson,
        RetryQueueItem,
        StatsRow,
    )
    from retryq_py.aio import AsyncRetryQueue
    from retryq_py.config import ConfigError, RetryConfig, load_config, parse_duration
    from retryq_py.errors import (
        PermanentError,
        RetryableError,
        Snooze,
        error_code,
        is_retryable,
        retry_after_seconds,
    )
    from retryq_py.queue import RetryQueue
    from retryq_py.sqlexec import SQL_EXEC_FAILED, SqlExecHandler, exec_sql, sql_exec_handler
    from retryq_py.worker import (
        AsyncRetryWorker,
        HandlerRegistry,
        RetryWorker,
        WorkerCounts,
        WorkerEvent,
        default_worker_id,
    )

_LAZY = {
    "CleanupResult": "retryq_py._sql",
    "Enqueued": "retryq_py._sql",
    "NewItem": "retryq_py._sql",
    "QueueEntry": "retryq_py._sql",
    "RawJson": "retryq_py._sql",
    "RetryQueueItem": "retryq_py._sql",
    "StatsRow": "retryq_py._sql",
    "SessionSettingError": "retryq_py._session",
    "AsyncRetryQueue": "retryq_py.aio",
    "ConfigError": "retryq_py.config",
    "RetryConfig": "retryq_py.config",
    "load_config": "retryq_py.config",
    "parse_duration": "retryq_py.config",
    "PermanentError": "retryq_py.errors",
    "RetryableError": "retryq_py.errors",
    "Snooze": "retryq_py.errors",
    "error_code": "retryq_py.errors",
    "is_retryable": "retryq_py.errors",
    "retry_after_seconds": "retryq_py.errors",
    "RetryQueue": "retryq_py.queue",
    "SQL_EXEC_FAILED": "retryq_py.sqlexec",
    "SqlExecHandler": "retryq_py.sqlexec",
    "exec_sql": "retryq_py.sqlexec",
    "sql_exec_handler": "retryq_py.sqlexec",
    "AsyncRetryWorker": "retryq_py.worker",
    "HandlerRegistry": "retryq_py.worker",
    "RetryWorker": "retryq_py.worker",
    "WorkerCounts": "retryq_py.worker",
    "WorkerEvent": "retryq_py.worker",
    "default_worker_id": "retryq_py.worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "SQL_EXEC_FAILED",
    "AsyncRetryQueue",
    "AsyncRetryWorker",
    "CleanupResult",
    "ConfigError",
    "Enqueued",
    "HandlerRegistry",
    "NewItem",
    "PermanentError",
    "QueueEntry",
    "RawJson",
    "RetryConfig",
    "RetryQueue",
    "RetryQueueItem",
    "RetryWorker",
    "RetryableError",
    "SessionSettingError",
    "Snooze",
    "SqlExecHandler",
    "StatsRow",
    "WorkerCounts",
    "WorkerEvent",
    "default_worker_id",
    "error_code",
    "exec_sql",
    "is_retryable",
    "load_config",
    "parse_duration",
    "retry_after_seconds",
    "sql_exec_handler",
]
