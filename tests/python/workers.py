"""The two workers behind one face, so that every worker scenario runs on both.

`WORKERS` parametrizes the `Worker` fixture (tests/python/conftest.py):
RetryWorker itself, and `AsyncInThread`, an AsyncRetryWorker with
RetryWorker's sync face: run() is asyncio.run(worker.run(...)) in the calling
thread (so signal handlers go on that loop), start() the same in a thread of
its own. A scenario's plain handler becomes a coroutine that runs it in a
thread (run_in_executor), since the scenarios block in their handlers (on events, on
the clock) and a blocked loop would run one handler at a time; a coroutine
function is given as it is.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from retryq_py import AsyncRetryWorker, RetryQueueItem, RetryWorker, WorkerCounts
from retryq_py.worker.registry import Handler


def as_coroutine(fn: Handler, threads: ThreadPoolExecutor) -> Handler:
    if inspect.iscoroutinefunction(fn):
        return fn

    @functools.wraps(fn)
    async def handler(item: RetryQueueItem) -> object:
        return await asyncio.get_running_loop().run_in_executor(threads, fn, item)

    return handler


class AsyncInThread:
    """AsyncRetryWorker, driven as RetryWorker is."""

    def __init__(self, database: Any, handlers: Mapping[str, Handler], **options: Any) -> None:
        # room for every blocked scenario handler, whatever worker_count is;
        # not the loop's default executor, which asyncio.run waits for: a
        # handler past the grace period is cancelled, but its thread runs on
        self._threads = ThreadPoolExecutor(64, thread_name_prefix="retryq-scenario")
        self.handlers = {
            event_type: as_coroutine(fn, self._threads) for event_type, fn in handlers.items()
        }
        self.worker = AsyncRetryWorker(database, self.handlers, **options)

    async def _run(self, **kwargs: Any) -> WorkerCounts:
        try:
            return await self.worker.run(**kwargs)
        finally:
            self._threads.shutdown(wait=False)

    def run(
        self,
        *,
        exit_when_idle: bool = False,
        exit_when_drained: bool = False,
        install_signal_handlers: bool | None = None,
    ) -> WorkerCounts:
        return asyncio.run(
            self._run(
                exit_when_idle=exit_when_idle,
                exit_when_drained=exit_when_drained,
                install_signal_handlers=install_signal_handlers,
            )
        )

    def start(
        self, *, exit_when_idle: bool = False, exit_when_drained: bool = False
    ) -> threading.Thread:
        thread = threading.Thread(
            target=self.run,
            kwargs={
                "exit_when_idle": exit_when_idle,
                "exit_when_drained": exit_when_drained,
                "install_signal_handlers": False,
            },
            name="retryq-async-worker",
            daemon=True,
        )
        thread.start()
        return thread

    def stop(self, *, force: bool = False) -> None:
        self.worker.stop(force=force)

    @property
    def stopping(self) -> bool:
        return self.worker.stopping

    @property
    def counts(self) -> WorkerCounts:
        return self.worker.counts

    @property
    def held(self) -> int:
        return self.worker.held

    @property
    def worker_id(self) -> str:
        return self.worker.worker_id

    @property
    def settings(self) -> Any:
        return self.worker.settings

    def __getattr__(self, name: str) -> Any:  # the settings: lanes, lock_timeout, ...
        return getattr(self.worker.settings, name)


WorkerType = Callable[..., Any]
WORKERS: dict[str, WorkerType] = {"threads": RetryWorker, "asyncio": AsyncInThread}
