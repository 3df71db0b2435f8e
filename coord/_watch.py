"""Watch: the iterator of events a backend feeds from its own thread, through a WatchFeed."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from ._errors import CoordError, StoreClosed
from ._metrics import count
from ._types import Event

__all__ = ["Watch", "WatchFeed"]

_CLOSED = object()


class WatchFeed:
    """The backend's side of one watch: where it delivers events, and from where it resumes.

    A backend calls ``emit`` for each change (in revision order, none lost
    or repeated), ``fail`` once it cannot go on, and reads ``revision`` (the
    last revision delivered, or the snapshot a watch started from, which it
    may set) to resume after a reconnect. Keys outside the Store's prefix
    are dropped here and the prefix is stripped, so backends deal in full keys.
    """

    def __init__(self, backend: str, map_key: Callable[[str], str | None]) -> None:
        self.backend = backend
        self.revision = 0
        self._map_key = map_key
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = threading.Event()
        #: Called, from the backend's thread, after each item is queued (``coord.aio`` wakes its loop so).
        self.notify: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def emit(self, event: Event) -> None:
        """Deliver one event."""
        key = self._map_key(event.key)
        if key is None or self._closed.is_set():
            return
        if key != event.key:
            event = Event(event.type, key, event.value, event.revision)
        self.revision = max(self.revision, event.revision)
        self._put(event)

    def resynced(self) -> None:
        """Say that this watch fell behind the history the backend keeps and re-synced (a metric counts it)."""
        count("coord.watch.resyncs", {"coord.backend": self.backend})

    def fail(self, error: CoordError) -> None:
        """End the stream with ``error``: the reader's next ``get`` raises it."""
        self._put(error)

    def _put(self, item: object) -> None:
        self._queue.put(item)
        notify = self.notify
        if notify is not None:
            notify()

    def _close(self) -> bool:
        """Stop delivering and wake a blocked reader; False if it was already closed."""
        if self._closed.is_set():
            return False
        self._closed.set()
        self._put(_CLOSED)
        return True


class Watch:
    """Events of one key or one prefix, in revision order, none lost or repeated.

    Iterate it (blocks until the next event; stops when the watch is closed),
    or call ``get(timeout)``, which returns ``None`` on timeout. If the
    backend cannot go on (unreachable past its retries), the next read
    raises that ``CoordError``. Closing the Store closes its watches.
    """

    def __init__(self, feed: WatchFeed, on_close: Callable[[WatchFeed], None] | None = None) -> None:
        self._feed = feed
        self._on_close = on_close
        self._ended = False

    @property
    def backend(self) -> str:
        return self._feed.backend

    @property
    def revision(self) -> int:
        """The last revision delivered (or the one the watch started from)."""
        return self._feed.revision

    @property
    def closed(self) -> bool:
        return self._feed.closed

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or ``None`` if none came within ``timeout`` seconds."""
        item = self._take(timeout)
        if item is None or isinstance(item, Event):
            return item
        self._ended = True
        if item is _CLOSED:
            raise StoreClosed("the watch is closed", backend=self.backend)
        assert isinstance(item, CoordError)
        self.close()
        raise item

    def _take(self, timeout: float | None) -> object:
        """The next item of the feed's queue (``None`` on timeout); subclasses may wait differently."""
        if self._ended or self._feed.closed:
            raise StoreClosed("the watch is closed", backend=self.backend)
        try:
            return self._feed._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _ready(self) -> bool:
        """Whether ``get`` would return at once."""
        return not self._feed._queue.empty()

    def _on_ready(self, notify: Callable[[], None] | None) -> None:
        """Have ``notify()`` called (from the backend's thread) whenever an item arrives; ``None`` to stop."""
        self._feed.notify = notify

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
        if self._feed._close() and self._on_close is not None:
            self._on_close(self._feed)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
