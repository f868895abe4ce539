"""A web app whose lifespan runs an AsyncRetryWorker beside it.

POST /webhooks {"url": ..., "payload": {...}} queues a delivery and answers
202; the worker POSTs the payload to the url with the app's own
httpx.AsyncClient, retried with backoff while the receiver fails (a 5xx, a
429, no answer) and dead-lettered when it refuses (another 4xx). GET
/worker shows the worker's counts. The app stops the worker when it stops:
uvicorn's SIGTERM or Ctrl-C lets the deliveries in flight finish (up to
grace_period) and hands the rest back to the queue.

    RETRYQ_DATABASE_URL=postgresql://localhost/app uvicorn examples.webhooks:app

Settings come from RETRYQ_* variables (load_config: RETRYQ_INITIAL_DELAY,
RETRYQ_WORKER_COUNT, RETRYQ_GRACE_PERIOD, ...).

Written for Starlette, which retryq's web extra installs (with uvicorn); the
HTTP client is the example's own: `pip install 'retryq[web]' httpx`. FastAPI
takes the same lifespan as it is: `app = FastAPI(lifespan=lifespan)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict

import httpx
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retryq_py import (
    AsyncRetryQueue,
    AsyncRetryWorker,
    PermanentError,
    RetryableError,
    RetryQueueItem,
    load_config,
)
from retryq_py.worker import Handler

DELIVER = "webhook.deliver"


def webhook_handlers(http: httpx.AsyncClient) -> Mapping[str, Handler]:
    """The handlers share the app's client (its connection pool)."""

    async def deliver(item: RetryQueueItem) -> None:
        try:
            response = await http.post(item.event_data["url"], json=item.event_data["payload"])
        except httpx.TransportError as exc:
            raise RetryableError(exc, "unreachable") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(f"HTTP {response.status_code}", f"http_{response.status_code}")
        if response.is_error:
            raise PermanentError(f"HTTP {response.status_code}", f"http_{response.status_code}")

    return {DELIVER: deliver}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    config = load_config()  # RETRYQ_* from the environment
    database = config.database_url
    if not database:
        raise RuntimeError("set RETRYQ_DATABASE_URL")
    async with (
        httpx.AsyncClient(timeout=10) as http,
        AsyncConnectionPool(database, min_size=1, max_size=4, open=False) as pool,
    ):
        worker = AsyncRetryWorker(database, webhook_handlers(http), config=config, name="webhooks")
        # entered once the worker is leasing; on the way out it stops
        # gracefully and is waited for, before the client and pool close
        async with worker:
            app.state.queue = AsyncRetryQueue(pool, config=config)
            app.state.worker = worker
            yield


async def queue_webhook(request: Request) -> JSONResponse:
    body = await request.json()
    queued = await request.app.state.queue.add(
        DELIVER, {"url": body["url"], "payload": body.get("payload")}
    )
    return JSONResponse({"id": queued.id, "event_id": str(queued.event_id)}, status_code=202)


async def worker_counts(request: Request) -> JSONResponse:
    return JSONResponse(asdict(request.app.state.worker.counts))


app = Starlette(
    routes=[
        Route("/webhooks", queue_webhook, methods=["POST"]),
        Route("/worker", worker_counts),
    ],
    lifespan=lifespan,
)
