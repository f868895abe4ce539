"""SIGTERM and SIGINT stop a worker; the previous handlers come back after.

A signal handler runs in the main thread between two bytecodes of whatever
it interrupted, so one that takes a lock (Event.set, logging, queue.put)
deadlocks when it lands while the main thread holds that lock: a second
SIGTERM inside the first one's `Event.set()` hung `retryq worker` for good.
So the handler here takes no lock: it writes the signal's number to a pipe,
and a thread of its own (the relay) logs and calls `stop` for it. Asyncio
needs no relay: loop.add_signal_handler runs the callback on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger("retryq.worker")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_END = 0  # no signal has number 0: the relay's last byte


@contextmanager
def relay_signals(
    on_signal: Callable[[signal.Signals], None],
    signals: tuple[signal.Signals, ...] = SIGNALS,
) -> Iterator[None]:
    """Within the block, each of `signals` calls `on_signal(signum)` in a
    thread of its own, in the order they came; every signal received is
    relayed before the block ends. Main thread only (signal.signal)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def handler(signum: int, frame: FrameType | None) -> None:
        # no lock, no allocation that could wait: one byte to the pipe (a
        # full pipe drops it: thousands of signals are waiting already)
        with contextlib.suppress(OSError):
            os.write(write_fd, bytes((signum,)))

    def relay() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(64):
                for signum in chunk:
                    if signum == _END:
                        return
                    try:
                        on_signal(signal.Signals(signum))
                    except Exception:
                        log.exception("handling signal %d failed", signum)

    thread = threading.Thread(target=relay, name="retryq-signals", daemon=True)
    thread.start()
    previous: dict[signal.Signals, Any] = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        # blocking now: the end marker must not be dropped
        os.set_blocking(write_fd, True)
        os.write(write_fd, bytes((_END,)))
        os.close(write_fd)
        # a stop that blocks this long is stuck: the process must still end
        thread.join(timeout=10)


@contextmanager
def stop_on_signals(stop: Callable[[], None], worker_id: str) -> Iterator[None]:
    """Within the block each signal calls `stop` (a second one forces the
    stop, as the worker's stop() does when called again), from the relay's
    thread (see relay_signals). Main thread only."""

    def on_signal(signum: signal.Signals) -> None:
        stop()  # first: a part that logs only while running sees it stopping
        log.info("worker %s: %s, stopping", worker_id, signum.name)

    with relay_signals(on_signal):
        yield


@contextmanager
def stop_on_signals_in_loop(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], None], worker_id: str
) -> Iterator[None]:
    """stop_on_signals for an asyncio loop (loop.add_signal_handler: `stop`
    runs on the loop, not inside whatever the signal interrupted). The
    previous handlers come back after. Main thread only."""

    def on_signal(signum: signal.Signals) -> None:
        log.info("worker %s: %s, stopping", worker_id, signum.name)
        stop()

    previous: dict[signal.Signals, Any] = {s: signal.getsignal(s) for s in SIGNALS}
    for signum in SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            if handler is not None:  # None: not set from Python; the default stays
                signal.signal(signum, handler)
