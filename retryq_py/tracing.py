"""OpenTelemetry across retries, with the `opentelemetry` extra
(`pip install 'retryq[opentelemetry]'`); without it every function here hands
back what it was given, so tracing costs nothing.

- `inject(metadata)` returns the item's metadata with the current trace
  context in it (W3C `traceparent`, and `tracestate` when set), under the key
  TRACE_KEY: pass it to `add(..., metadata=inject({...}))`.
- `traced(handlers)` wraps each handler (a plain function for RetryWorker,
  a coroutine function for AsyncRetryWorker) so that each attempt runs in a
  CONSUMER span `retryq process EVENT_TYPE`, a child of the context stored at
  enqueue and linked to it, with the item id, event_id, correlation id and
  attempt number; a handler that raises marks its span as an error. Every
  attempt of one item, hours apart, is then in the trace of the request that
  failed first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from retryq_py._sql import RetryQueueItem
from retryq_py.worker.handlers import is_coroutine_handler, is_generator_handler

TRACE_KEY = "retryq_trace"
SCOPE = "retryq"

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError:  # the extra is not installed
    trace = None  # type: ignore[assignment]

Handler = Callable[[RetryQueueItem], Any]


def available() -> bool:
    return trace is not None


def inject(metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`metadata` plus the current trace context (none when no span is active
    or OpenTelemetry is absent)."""
    out = dict(metadata or {})
    if trace is None:
        return out
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        out[TRACE_KEY] = carrier
    return out


def _span_name(item: RetryQueueItem) -> str:
    return f"retryq process {item.event_type}"


def _attempt_span(item: RetryQueueItem) -> Any:
    """The attempt's span, a context manager that makes it current."""
    assert trace is not None
    carrier = (item.event_metadata or {}).get(TRACE_KEY)
    parent = propagate.extract(carrier) if isinstance(carrier, dict) else None
    origin = trace.get_current_span(parent).get_span_context() if parent else None
    links = [Link(origin)] if origin is not None and origin.is_valid else []
    attributes: dict[str, str | int] = {
        "messaging.system": "retryq",
        "messaging.operation.type": "process",
        "messaging.destination.name": item.event_type,
        "messaging.message.id": str(item.event_id),
        "retryq.item_id": item.id,
        "retryq.attempt": item.retry_count + 1,
        "retryq.max_attempts": item.max_retries + 1,
    }
    if item.correlation_id:
        attributes["retryq.correlation_id"] = item.correlation_id
    if item.plugin_name:
        attributes["retryq.plugin_name"] = item.plugin_name
    return trace.get_tracer(SCOPE).start_as_current_span(
        _span_name(item),
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
        record_exception=True,
        set_status_on_exception=False,
    )


def _failed(span: Any, exc: BaseException) -> None:
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _wrap(fn: Handler) -> Handler:
    if is_generator_handler(fn):
        return fn  # as it is, for the worker to refuse (wrapped, it would pass for a function)
    if is_coroutine_handler(fn):
        # the span lasts while the coroutine runs, and is current in it
        @functools.wraps(fn)
        async def attempt_async(item: RetryQueueItem) -> Any:
            with _attempt_span(item) as span:
                try:
                    return await fn(item)
                except BaseException as exc:
                    _failed(span, exc)
                    raise

        return attempt_async

    @functools.wraps(fn)
    def attempt(item: RetryQueueItem) -> Any:
        with _attempt_span(item) as span:
            try:
                return fn(item)
            except BaseException as exc:
                _failed(span, exc)
                raise

    return attempt


def traced(handlers: Mapping[str, Handler]) -> Mapping[str, Handler]:
    """The handlers, each attempt in a span (unchanged without OpenTelemetry)."""
    if trace is None:
        return handlers
    return {event_type: _wrap(fn) for event_type, fn in handlers.items()}
