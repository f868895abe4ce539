"""retryq: a durable retry queue that lives in PostgreSQL."""

from retryq_py._session import SessionSettingError
from retryq_py._sql import (
    CleanupResult,
    Enqueued,
    NewItem,
    QueueEntry,
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
