"""Prometheus metrics.

Worker side: what each RetryWorker in this process did, by event_type. The
metric objects live in prometheus_client's default registry, so an exporter
started anywhere in the process serves them.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ITEMS_PROCESSED = Counter(
    "retryq_worker_items_processed",
    "Items whose handler succeeded and that the worker completed.",
    ["event_type"],
)
ITEMS_FAILED = Counter(
    "retryq_worker_items_failed",
    "Attempts that failed and were scheduled for a retry.",
    ["event_type"],
)
ITEMS_DEAD_LETTERED = Counter(
    "retryq_worker_items_dead_lettered",
    "Items the worker turned into dead letters (permanent error, unknown type, spent budget).",
    ["event_type"],
)
HANDLER_DURATION = Histogram(
    "retryq_worker_handler_duration_seconds",
    "Time spent in a handler, whatever its outcome.",
    ["event_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ACQUIRE_DURATION = Histogram(
    "retryq_worker_acquire_duration_seconds",
    "Round trip of one acquire_retry_items call.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
