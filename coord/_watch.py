"""Watch: the iterator of events a backend feeds from its own thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from ._errors import CoordError, StoreClosed
from ._types import Event

__all__ = ["Watch"]

_CLOSED = object()


class Watch:
    """Events of one key or one prefix, in revision order, none lost or repeated.

    Iterate it (blocks until the next event; stops when the watch is closed),
    or call ``get(timeout)``, which returns ``None`` on timeout. If the
    backend cannot go on (unreachable past its retries), the next read
    raises that ``CoordError``. Closing the Store closes its watches.

    Backends push events with ``_emit`` and end the stream with ``_fail``;
    ``revision`` is the last revision delivered, from which a backend resumes
    after a reconnect.
    """

    def __init__(self, backend: str, on_close: Callable[[Watch], None] | None = None) -> None:
        self.backend = backend
        self.revision = 0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._on_close = on_close
        self._closed = threading.Event()
        self._ended = False
        self._map_key: Callable[[str], str | None] = lambda key: key

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _emit(self, event: Event) -> None:
        """Deliver one event (backend side). Keys outside the store's prefix are dropped."""
        key = self._map_key(event.key)
        if key is None or self._closed.is_set():
            return
        if key != event.key:
            event = Event(event.type, key, event.value, event.revision)
        self.revision = max(self.revision, event.revision)
        self._queue.put(event)

    def _fail(self, error: CoordError) -> None:
        """End the stream with ``error`` (backend side)."""
        self._queue.put(error)

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or ``None`` if none came within ``timeout`` seconds."""
        if self._ended or self._closed.is_set():
            raise StoreClosed("the watch is closed", backend=self.backend)
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            self._ended = True
            raise StoreClosed("the watch is closed", backend=self.backend)
        if isinstance(item, CoordError):
            self._ended = True
            self.close()
            raise item
        assert isinstance(item, Event)
        return item

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            event = self.get()
        except StoreClosed:
            raise StopIteration from None
        assert event is not None
        return event

    def close(self) -> None:
        """Stop the watch; a blocked reader wakes up. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._queue.put(_CLOSED)
        if self._on_close is not None:
            self._on_close(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
