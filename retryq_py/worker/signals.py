"""SIGTERM and SIGINT stop a worker; the previous handlers come back after."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger("retryq.worker")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: Callable[[], None], worker_id: str) -> Iterator[None]:
    """Within the block each signal calls `stop` (a second one forces the
    stop, as the worker's stop() does when called again). Main thread only."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("worker %s: %s, stopping", worker_id, signal.Signals(signum).name)
        stop()

    previous: dict[signal.Signals, Any] = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
