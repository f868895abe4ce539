"""Handlers by event_type."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from retryq_py._sql import RetryQueueItem, is_blank

Handler = Callable[[RetryQueueItem], object]
H = TypeVar("H", bound=Handler)


class HandlerRegistry(Mapping[str, Handler]):
    """Handlers by event_type, filled with a decorator.

    registry = HandlerRegistry()

    @registry.handler("cytube.event.chatMsg")
    def resend(item: RetryQueueItem) -> None: ...
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for event_type, fn in (handlers or {}).items():
            self.register(event_type, fn)

    def register(self, event_type: str, fn: Handler) -> None:
        # blank by the queue's rule (_retryq_blank): no item can have that type
        if not isinstance(event_type, str) or is_blank(event_type):
            raise ValueError(f"event_type must be a non-blank string, got {event_type!r}")
        if not callable(fn):
            raise TypeError(f"handler for {event_type!r} is not callable: {fn!r}")
        if event_type in self._handlers:
            raise ValueError(f"a handler for {event_type!r} is already registered")
        self._handlers[event_type] = fn

    def handler(self, event_type: str) -> Callable[[H], H]:
        def decorate(fn: H) -> H:
            self.register(event_type, fn)
            return fn

        return decorate

    def __getitem__(self, event_type: str) -> Handler:
        return self._handlers[event_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)
