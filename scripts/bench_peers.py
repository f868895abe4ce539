"""Worker throughput side by side (c): RetryWorker, pgqueuer's QueueManager in
drain mode and procrastinate's worker with wait=False, each draining the same
number of no-op jobs with 4 handlers at a time; and enqueue-to-handler latency
through NOTIFY with a 30 s poll interval (g).

Worker throughput is jobs over the time from starting the worker (its start-up
included) to the last handler call: how each one notices that the queue is
empty and shuts down is not part of the judged figure, for any of them. Each
function returns that rate and, for the record, jobs over the whole run."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psycopg
from bench_db import PAYLOAD, Cluster, connect, load_items, settle, vacuum_analyze

CONCURRENCY = 4
BATCH = 10


def peer_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("pgqueuer", "procrastinate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def retryworker_drain(
    cluster: Cluster, template: str, items: int, instances: int = 1
) -> tuple[float, float]:
    """Jobs per second for RetryWorker run with exit_when_drained over items due
    no-op jobs: `instances` workers side by side (each its own leasing loop and
    connections, like pgqueuer's QueueManagers), CONCURRENCY handler threads in
    all, batch 10 each."""
    from retryq_py.worker import RetryWorker

    with cluster.database("rw", template) as dsn:
        with connect(dsn) as conn:
            load_items(conn, items)
        vacuum_analyze(dsn)
        settle(dsn)
        seen, last = [0], [0.0]
        lock = threading.Lock()

        def noop(item: Any) -> None:
            with lock:
                seen[0] += 1
                last[0] = time.perf_counter()

        workers = [
            RetryWorker(
                dsn,
                {"bench.noop": noop},
                worker_id=f"bench-rw-{i}",
                worker_count=CONCURRENCY // instances,
                batch_size=BATCH,
                poll_interval=30,
                cleanup_interval=0,
            )
            for i in range(instances)
        ]
        start = time.perf_counter()
        if instances == 1:
            workers[0].run(exit_when_drained=True, install_signal_handlers=False)
        else:
            for thread in [w.start(exit_when_drained=True) for w in workers]:
                thread.join()
        whole = time.perf_counter() - start
        elapsed = last[0] - start
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM daz_retry_queue WHERE status = 'completed'"
            ).fetchone()
        if seen[0] != items or row is None or row[0] != items:
            raise RuntimeError(f"RetryWorker: {seen[0]} handled, {row} completed of {items}")
        return items / elapsed, items / whole


def pgqueuer_drain(cluster: Cluster, items: int) -> tuple[float, float]:
    """Jobs per second for 4 pgqueuer QueueManagers (the layout of pgqueuer's
    own benchmark: one connection each, in one event loop), batch 10, each
    run in drain mode until the queue is empty."""
    from pgqueuer import QueueManager
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    with cluster.database("pgqueuer") as dsn:

        async def main() -> tuple[float, float]:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                queries = Queries(PsycopgDriver(conn))
                await queries.install()
                for start in range(0, items, 1000):
                    n = min(1000, items - start)
                    await queries.enqueue(["noop"] * n, [PAYLOAD.encode()] * n, [0] * n)
                await conn.execute("VACUUM ANALYZE")
            settle(dsn)
            conns = [
                await psycopg.AsyncConnection.connect(dsn, autocommit=True)
                for _ in range(CONCURRENCY)
            ]
            seen, last = [0], [0.0]
            managers = []
            for c in conns:
                qm = QueueManager(Queries(PsycopgDriver(c)))

                @qm.entrypoint("noop")
                async def noop(job: Any) -> None:
                    seen[0] += 1
                    last[0] = time.perf_counter()

                managers.append(qm)
            start = time.perf_counter()
            await asyncio.gather(
                *(qm.run(batch_size=BATCH, mode=QueueExecutionMode.drain) for qm in managers)
            )
            whole = time.perf_counter() - start
            elapsed = last[0] - start
            for c in conns:
                await c.close()
            if seen[0] != items:
                raise RuntimeError(f"pgqueuer: {seen[0]} handled of {items}")
            return items / elapsed, items / whole

        return asyncio.run(main())


def procrastinate_drain(cluster: Cluster, items: int) -> tuple[float, float]:
    """Jobs per second for procrastinate's run_worker_async(concurrency=4,
    wait=False)."""
    import procrastinate

    with cluster.database("procrastinate") as dsn:

        async def main() -> tuple[float, float]:
            app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
            seen, last = [0], [0.0]

            @app.task(name="noop")
            async def noop(**kwargs: Any) -> None:
                seen[0] += 1
                last[0] = time.perf_counter()

            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                for start in range(0, items, 1000):
                    n = min(1000, items - start)
                    await noop.batch_defer_async(*[{"payload": PAYLOAD}] * n)
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute("VACUUM ANALYZE")
                settle(dsn)
                start = time.perf_counter()
                await app.run_worker_async(
                    concurrency=CONCURRENCY, wait=False, install_signal_handlers=False
                )
                whole = time.perf_counter() - start
                elapsed = last[0] - start
            if seen[0] != items:
                raise RuntimeError(f"procrastinate: {seen[0]} handled of {items}")
            return items / elapsed, items / whole

        return asyncio.run(main())


def notify_latency(cluster: Cluster, template: str, samples: int) -> dict[str, float]:
    """Milliseconds from the guide's INSERT (committed on its own) to the
    handler starting, with RetryWorker idle and a 30 s poll interval, so only
    NOTIFY can wake it in time. One item at a time."""
    from retryq_py.worker import RetryWorker

    with cluster.database("notify", template) as dsn:
        handled = threading.Event()
        at = [0.0]

        def record(item: Any) -> None:
            at[0] = time.perf_counter()
            handled.set()

        worker = RetryWorker(
            dsn,
            {"bench.noop": record},
            worker_id="bench-notify",
            worker_count=1,
            batch_size=BATCH,
            poll_interval=30,
            cleanup_interval=0,
        )
        thread = worker.start()
        latencies: list[float] = []
        try:
            with connect(dsn) as conn:
                # the first item also proves the worker is up and listening
                for n in range(samples + 1):
                    handled.clear()
                    sent = time.perf_counter()
                    conn.execute(
                        "INSERT INTO daz_retry_queue (event_type, event_data) VALUES (%s, %s)",
                        ("bench.noop", PAYLOAD),
                    )
                    if not handled.wait(timeout=60 if n == 0 else 10):
                        raise RuntimeError(f"notify: item {n} not handled within the deadline")
                    if n:
                        latencies.append((at[0] - sent) * 1000)
                    # let the worker settle back into its idle wait
                    deadline = time.monotonic() + 10
                    while worker.held and time.monotonic() < deadline:
                        time.sleep(0.005)
        finally:
            worker.stop()
            thread.join(timeout=30)
        ordered = sorted(latencies)
        return {
            "p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        }
