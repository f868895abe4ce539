"""RetryWorker: runs handlers for leased items, one process, many threads.

Why threads: the operations this queue retries (send a chat message, replay
a SQL write, call an HTTP API) spend their time waiting on the network, and
psycopg and most client libraries release the GIL while they wait. Threads
give that concurrency with plain synchronous handlers and one small
connection pool. Processes would add a pool and a LISTEN connection per
process for no gain on I/O; asyncio would force every handler to be
`async`. For CPU-bound handlers, run several `retryq worker` processes:
the queue's SKIP LOCKED leases split the work between them. For `async`
handlers, AsyncRetryWorker (aio.py) runs this same engine with the
handlers as tasks on the caller's event loop (handlers.HandlerTasks).

Inside one worker, a few parts with one job each:
- settings.py: the config and keywords, resolved and checked once;
- ledger.py: the one owner, under one lock, of what the worker holds
  (leased, running, outcomes waiting to be written) and of its counts;
- lanes.py: `lanes` control loops (the thread that calls run() is the
  first), each writing outcomes and leasing the next items in one
  transaction on a connection of its own. A worker holds at most
  batch_size * (2 * lanes - 1) + worker_count items: with slow handlers and
  several worker processes sharing a short queue, lanes=1 (or a smaller
  batch_size) spreads the items more evenly;
- flush.py: that transaction as one query (FlushWriter), and the moves
  between ledger and writer around it (Flusher). Successes are acknowledged
  in batches with complete_retry_items (within ack_interval, far inside the
  lease), failures with fail_retry_item;
- handlers.py: worker_count threads run the handlers (or, for
  AsyncRetryWorker, at most worker_count tasks); they never touch the
  database: outcomes go back through the ledger;
- listener.py: LISTEN on retry_queue_channel(), on its own autocommit
  connection, to wake the lanes;
- heartbeat.py: extends the leases of items held for half of lock_timeout,
  so a slow handler keeps its item (up to handler_timeout, when set: then
  the lease runs out and another worker takes the item over, counted as a
  failed attempt; while every handler has run past it, the items waiting
  behind them are released, and none leased until a handler ends);
- shutdown.py and signals.py: the stop, and SIGTERM/SIGINT asking for it;
- runner.py: RetryWorker, which wires them and runs them once.

A lost connection is never fatal: each loop logs it, backs off (doubling,
up to max_backoff) and tries again; the pool replaces broken connections.
Outcomes not yet written stay in memory until a write succeeds, and an item
whose lease ran out meanwhile is taken over by a worker later (counted as a
failed attempt): nothing is lost, at the price of a possible second run,
which is why handlers must be idempotent.

Stop (SIGTERM, SIGINT or stop()): no more acquiring; items held but not
started are released at once (release_retry_items: no retry spent, due
now); in-flight handlers get grace_period to finish; those still running
after it are released too, so another worker can take them at once (a
second SIGINT/SIGTERM skips the grace period).
"""

from retryq_py.worker.aio import AsyncRetryWorker, WorkerOptions
from retryq_py.worker.events import EventKind, WorkerCounts, WorkerEvent
from retryq_py.worker.registry import Handler, HandlerRegistry
from retryq_py.worker.runner import RetryWorker, WorkerParts
from retryq_py.worker.settings import Routing, Settings, default_worker_id

__all__ = [
    "AsyncRetryWorker",
    "EventKind",
    "Handler",
    "HandlerRegistry",
    "RetryWorker",
    "Routing",
    "Settings",
    "WorkerCounts",
    "WorkerEvent",
    "WorkerOptions",
    "WorkerParts",
    "default_worker_id",
]
