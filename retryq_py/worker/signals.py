"""SIGTERM and SIGINT stop a worker; the previous handlers come back after."""

from __future__ import annotations

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
