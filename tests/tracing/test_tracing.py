"""OpenTelemetry across retries (issue 16 item 4): the trace context stored at
enqueue, each attempt a span in that trace, linked to it, read back from the
SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from retryq_py import AsyncRetryWorker, RetryQueue, RetryQueueItem, RetryWorker, tracing
from tests.python import worker_handlers

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="no opentelemetry extra")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

# Run by one of .ci/run's passes only: spans in the SDK's exporter; the worker's SQL is
# the worker scenarios' on every server.
pytestmark = pytest.mark.server_agnostic

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if not isinstance(trace.get_tracer_provider(), sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)  # once per process
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_three_attempts_share_the_trace_of_the_request(
    dsn: str, conn: Any, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("the-app")
    with tracer.start_as_current_span("POST /chat") as request:
        item_id, event_id = RetryQueue(conn).add(
            "flaky",
            {"fail_times": 2},
            retry_delay=0,
            correlation_id="req-9",
            metadata=tracing.inject({"tenant": "acme"}),
        )
    origin = request.get_span_context()
    stored = RetryQueue(conn).get(item_id)
    assert stored is not None and stored.event_metadata["tenant"] == "acme"
    assert stored.event_metadata[tracing.TRACE_KEY]["traceparent"].startswith("00-")

    handlers = tracing.traced(worker_handlers.HANDLERS)
    counts = RetryWorker(dsn, handlers, poll_interval=0.2).run(exit_when_drained=True)
    assert (counts.processed, counts.failed) == (1, 2)

    attempts = sorted(
        (s for s in spans.get_finished_spans() if s.name == "retryq process flaky"),
        key=lambda s: s.attributes["retryq.attempt"],  # type: ignore[index]
    )
    assert [s.attributes["retryq.attempt"] for s in attempts] == [1, 2, 3]  # type: ignore[index]
    for span in attempts:
        assert span.kind == SpanKind.CONSUMER
        assert span.context.trace_id == origin.trace_id  # one trace
        assert span.parent is not None and span.parent.span_id == origin.span_id
        assert [link.context.span_id for link in span.links] == [origin.span_id]
        assert span.attributes["messaging.message.id"] == str(event_id)  # type: ignore[index]
        assert span.attributes["retryq.correlation_id"] == "req-9"  # type: ignore[index]
        assert span.attributes["retryq.item_id"] == item_id  # type: ignore[index]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert any(e.name == "exception" for e in attempts[0].events)


async def test_an_async_handlers_attempt_spans_its_awaits_and_is_current_in_it(
    dsn: str, conn: Any, spans: InMemorySpanExporter
) -> None:
    """AsyncRetryWorker: the span ends when the coroutine does (not when it
    is created), and a span the handler opens after an await is its child."""
    tracer = trace.get_tracer("the-app")
    with tracer.start_as_current_span("POST /chat") as request:
        RetryQueue(conn).add(
            "flaky", {}, retry_delay=0, metadata=tracing.inject({"tenant": "acme"})
        )
    origin = request.get_span_context()

    async def flaky(item: RetryQueueItem) -> None:
        await asyncio.sleep(0.05)
        with tracer.start_as_current_span("call upstream"):
            if item.retry_count == 0:
                raise ConnectionResetError("upstream reset")

    handlers = tracing.traced({"flaky": flaky})
    counts = await AsyncRetryWorker(dsn, handlers, poll_interval=0.2).run(exit_when_drained=True)
    assert (counts.processed, counts.failed) == (1, 1)
    finished = spans.get_finished_spans()
    attempts = sorted(
        (s for s in finished if s.name == "retryq process flaky"),
        key=lambda s: s.attributes["retryq.attempt"],  # type: ignore[index]
    )
    calls = [s for s in finished if s.name == "call upstream"]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    for span in attempts:
        assert span.context.trace_id == origin.trace_id
        assert span.end_time - span.start_time >= 50_000_000  # ns: the await is inside
    assert sorted(c.parent.span_id for c in calls) == sorted(  # type: ignore[union-attr]
        a.context.span_id for a in attempts
    )


def test_no_span_no_context(spans: InMemorySpanExporter) -> None:
    assert tracing.inject({"a": 1}) == {"a": 1}
    assert tracing.inject(None) == {}


def test_nothing_changes_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "trace", None)
    handlers = worker_handlers.HANDLERS
    assert tracing.traced(handlers) is handlers
    assert tracing.inject({"a": 1}) == {"a": 1}
    assert not tracing.available()
