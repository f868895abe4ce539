"""How a worker's threads are told to look again, to stop, and that it is over."""

from __future__ import annotations

import threading


class Wake:
    """One wake-up flag per lane, all set at once: every lane looks again.

    A lane clears its flag before it looks at the state, so a wake-up that
    comes while it works is never lost.
    """

    def __init__(self, lanes: int) -> None:
        self._events = [threading.Event() for _ in range(lanes)]

    def set(self) -> None:
        for event in self._events:
            event.set()

    def clear(self, lane: int) -> None:
        self._events[lane].clear()

    def wait(self, lane: int, timeout: float) -> None:
        self._events[lane].wait(max(0.0, timeout))


class Stop:
    """A worker's stop request: `stopping` (acquire no more), `force` (skip the
    grace period) and `done` (run() is over: background threads end)."""

    def __init__(self, wake: Wake) -> None:
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.done = threading.Event()
        self._wake = wake
        # the first error of a part that is not a lane (the heartbeat): run() raises it
        self.error: BaseException | None = None
        self._error_lock = threading.Lock()

    def request(self, *, force: bool = False) -> None:
        """A second request forces, as a second SIGTERM does."""
        if force or self.stopping.is_set():
            self.force.set()
        self.stopping.set()
        self._wake.set()

    def halt(self) -> None:
        """Stop acquiring (a lane failed): the others end their loops too."""
        self.stopping.set()
        self._wake.set()

    def fail(self, exc: BaseException) -> None:
        """A part that is not a lane met an error no retry can help: stop at
        once, and run() raises the first such error."""
        with self._error_lock:
            if self.error is None:
                self.error = exc
        self.abort()

    def abort(self) -> None:
        """An error: stop at once, with no grace period."""
        self.stopping.set()
        self.force.set()
        self._wake.set()
