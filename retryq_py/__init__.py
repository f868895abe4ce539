"""retryq: a durable retry queue that lives in PostgreSQL."""

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
from retryq_py.errors import PermanentError, RetryableError, error_code, is_retryable
from retryq_py.queue import RetryQueue
from retryq_py.worker import (
    HandlerRegistry,
    RetryWorker,
    WorkerCounts,
    WorkerEvent,
    default_worker_id,
)

__all__ = [
    "AsyncRetryQueue",
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
    "StatsRow",
    "WorkerCounts",
    "WorkerEvent",
    "default_worker_id",
    "error_code",
    "is_retryable",
    "load_config",
    "parse_duration",
]
