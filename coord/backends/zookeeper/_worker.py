"""The one background thread of a Store: feeds its watches, watches lease keys, reaps ttl keys, trims the log.

It starts with the first task and runs every task in order, so watch state
needs no locking beyond what ``_log`` keeps. Kazoo calls back on its own
thread (which must not block), so those callbacks only queue tasks here.

What a watched put asks of the Store (``_track``): a lease key's znode is
watched, so that when its session expires, unlogged, this Store logs the
delete at once; a ttl key is reaped (deleted, logged) at its expiry.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from kazoo.client import KazooState
from kazoo.protocol.states import EventType

from ..._clock import Clock, Timer
from ..._errors import CoordError, StoreUnavailable
from ..._watch import WatchFeed
from . import _notify as notify
from ._blobs import Blobs
from ._boundary import Boundary, Try
from ._keys import Keys
from ._layout import Layout, Node
from ._log import Log

log = logging.getLogger("coord.zookeeper")

Task = tuple[str, Callable[[], None]]  # a name for the logs, and what to run
_RETRY_TAIL = 0.5  # seconds before reading the log again after a failed read
_IDLE = 2.0  # seconds without a watch before the Store stops hearing of every log entry


class Worker:
    def __init__(
        self,
        zk: Boundary,
        layout: Layout,
        keys: Keys,
        blobs: Blobs,
        history: int,
        closed: Callable[[], bool],
        clock: Clock,
    ) -> None:
        self._zk, self._layout, self._keys, self._closed = zk, layout, keys, closed
        self._clock = clock
        self._timers = clock.timers("zookeeper")  # they only queue tasks for the worker thread
        self.log = Log(zk, layout, keys, blobs, history, track=self._track, on_event=self._on_event)
        self._tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ephemerals: dict[str, str] = {}  # watched lease keys: path -> key
        self._retry_tail: Timer | None = None
        self._idle: Timer | None = None
        notify.hook(zk.client, layout.log, self._announced)

    def submit(self, name: str, task: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None and not self._closed():
                self._thread = threading.Thread(target=self._work, name="coord-zookeeper", daemon=True)
                self._thread.start()
        self._tasks.put((name, task))

    def wake(self) -> None:
        """Let the thread see that the Store closed."""
        self._tasks.put(("close", lambda: None))

    def watch(self, watch: WatchFeed, key: str, tree: bool, start: int | None) -> None:
        """Start feeding ``watch``; return once its snapshot or replay was delivered."""
        done: Future[None] = Future()

        def task() -> None:
            try:
                self.log.start(watch, key, tree, start)
            except Exception as exc:
                done.set_exception(exc)
                raise
            done.set_result(None)

        self.submit("watch", task)
        try:
            done.result(timeout=self._zk.timeout * 4)
        except FutureTimeout as exc:
            raise StoreUnavailable("the watch did not start in time") from exc

    def unwatch(self, watch: WatchFeed) -> None:
        """Stop feeding ``watch``; with none left for a while, stop hearing of the log."""
        self.log.forget(watch)
        if not self.log.watched() and (self._idle is None or not self._idle.pending):
            idle = functools.partial(self.submit, "idle", self.log.idle)
            self._idle = self._timers.call_at(self._clock.now() + _IDLE, idle)

    def _announced(self, name: str) -> None:
        """kazoo's I/O thread: a log entry was created."""
        if self.log.announce(name):
            self.submit("entries", lambda: self._retrying(self.log.read_announced))

    def reap_at(self, key: str, mzxid: int, expires: float) -> None:
        """Reap a ttl key at ``expires`` (server wall clock, seconds), unless written since."""
        self.submit("reap", lambda: self._schedule(key, mzxid, expires))

    def trim(self) -> None:
        self.submit("trim", lambda: self._zk.call(self.log.trim))

    def on_state(self, state: str) -> None:
        """Kazoo's state listener of the main client."""
        if state == KazooState.CONNECTED and self._thread is not None:
            self.submit("connected", lambda: self._feeding(self._reconnected))  # the server forgot every watch

    def _on_event(self, event: Any) -> None:
        if event.type == EventType.NONE or event.path is None:
            return
        if event.path == self._layout.log:  # the child watch of servers before 3.6
            self.submit("log", lambda: self._feeding(self.log.catch_up))
        else:
            self.submit("key", lambda: self._retrying(lambda: self._key_changed(event.path)))

    def _work(self) -> None:
        while not self._closed():
            try:
                name, task = self._tasks.get(timeout=1.0)
            except queue.Empty:
                continue
            self._run(name, task)

    @staticmethod
    def _run(name: str, task: Callable[[], None]) -> None:
        try:
            task()
        except CoordError as exc:
            log.debug("zookeeper worker: %s failed: %s", name, exc)
        except Exception:  # never let the worker die
            log.exception("zookeeper worker: %s failed", name)

    def _feeding(self, read: Callable[[], None]) -> None:
        """Read the log for the watches, if any."""
        if not self.log.watched():
            if not self.log.persistent:
                self.log.seq = None  # nothing to feed: stop re-arming the child watch; the next watch starts afresh
            return
        self._retrying(read)

    def _retrying(self, read: Callable[[], None]) -> None:
        """Read for the watches; on failure, read everything again shortly (watches may have been lost too)."""
        try:
            read()
        except CoordError:
            if self._retry_tail is None or not self._retry_tail.pending:
                again = functools.partial(self.submit, "connected", lambda: self._feeding(self._reconnected))
                self._retry_tail = self._timers.call_at(self._clock.now() + _RETRY_TAIL, again)
            raise

    def _reconnected(self) -> None:
        self.log.catch_up()
        for path, key in list(self._ephemerals.items()):
            self._check_ephemeral(path, key)

    def _key_changed(self, path: str) -> None:
        watched = self._ephemerals.get(path)
        if watched is not None:
            self._check_ephemeral(path, watched)

    def _schedule(self, key: str, mzxid: int, expires: float) -> None:
        due = self._clock.now() + max(0.0, expires - time.time()) + 0.01  # expires is on the server's wall clock
        self._timers.call_at(
            due, functools.partial(self.submit, "reap", functools.partial(self._keys.reap, key, mzxid))
        )

    def _check_ephemeral(self, path: str, key: str) -> None:
        def attempt(t: Try) -> None:
            if t.wait(self._zk.client.exists_async(path, watch=self._on_event)) is None:
                self._ephemerals.pop(path, None)
                self._keys.reap_guard(t, key)

        self._zk.call(attempt)

    def _track(self, key: str, node: Node, stat: Any) -> None:
        """What a watched put asks of this Store: watch a lease key's znode, reap a ttl key at expiry."""
        if stat.ephemeralOwner or node.lease is not None:
            path = self._layout.paths(key).path
            if path not in self._ephemerals:
                self._ephemerals[path] = key
                check = functools.partial(self._check_ephemeral, path, key)
                self.submit("ephemeral", lambda: self._retrying(check))  # next: a new watch need not wait for it
        if node.ttl_ms:
            self._schedule(key, stat.mzxid, (stat.mtime + node.ttl_ms) / 1000)
