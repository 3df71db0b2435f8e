"""Watches on Consul: a blocking query on the data, the log for what happened in between.

Each Watch is one thread and one connection of its own, holding a blocking
query (``?index=&wait=``) on its key, or on its prefix with ``?recurse``: an
HTTP long poll occupies its connection, and py-consul is synchronous. Consul
answers when what the query reads changed (or after ``wait``); the answer is
the current state, not the changes. So on each answer that differs from what
the watch delivered, the watch reads the log records of its key or prefix
(``_layout``: every coord write logs its puts and deletes, each record at its
write's index) and delivers, per key, the logged events since its last
answer, in revision order and, within one transaction, in op order. What the
log cannot explain it re-syncs from the state, as issue 10 wants: a key that
vanished (a session expired or was destroyed, ``delete_tree``, a writer that
is not coord) gets a delete at the answer's index; a key re-created since
gets a delete before its creation; a value written by a non-coord writer (or
whose record expired) gets a put at its ``ModifyIndex``.

Index rules (Consul's "Implementation Details" of blocking queries): the
index sent is the last ``X-Consul-Index`` seen; one that went backwards
restarts from 0 (the next answer comes at once and is diffed as usual); one
that is 0 is taken as 1.

``start_revision`` replays the log from that revision (records live at least
``history`` seconds), then goes on from the state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..._errors import CoordError, StoreUnavailable
from ..._types import Event
from ..._watch import WatchFeed
from ._boundary import BACKEND, Boundary
from ._layout import Layout, Record, decode

__all__ = ["ConsulWatch"]

_UNKNOWN = (-1, -1)  # a key whose state before a start_revision replay is not known
_LAST = 1 << 30  # the position of events the state, not the log, told


@dataclass
class _Seen:
    revision: int  # ModifyIndex
    created: int


class ConsulWatch:
    """One Watch: its thread, its connection, and what it delivered."""

    def __init__(
        self,
        feed: WatchFeed,
        consul: Boundary,
        layout: Layout,
        key: str,
        tree: bool,
        wait: float,
        retry: float,
        label: Callable[[str], str | None],
    ) -> None:
        self._feed, self._consul, self._layout = feed, consul, layout
        self._key, self._tree, self._wait, self._retry, self._label = key, tree, wait, retry, label
        self._path = "/v1/kv/" + (layout.tree(key) if tree else layout.data(key))
        self._seen: dict[str, tuple[int, int]] = {}
        self._index = 0
        self._reset = False  # the index went backwards: the next answer re-syncs from the state alone
        self.closed = False

    def start(self, start_revision: int | None) -> None:
        """Deliver the current state (or the history since ``start_revision``), then follow in a thread."""
        index, current = self._consul.call(lambda _: self._read(0))
        if start_revision is None:
            for key in sorted(current):
                entry = current[key]
                self._feed.emit(Event("put", key, decode(entry.get("Value")), int(entry["ModifyIndex"])))
            self._seen = {key: _state(entry) for key, entry in current.items()}
            self._index = index
        else:
            self._index = max(0, start_revision - 1)
            self._merge(index, current, replay=True)
        self._feed.revision = max(self._feed.revision, index)
        threading.Thread(target=self._follow, name="coord-consul-watch", daemon=True).start()

    def close(self) -> None:
        """Stop: the thread ends when its poll returns (within ``watch_wait``), its connection then dropped."""
        self.closed = True
        self._consul.close()

    # -- the thread ---------------------------------------------------------------------

    def _follow(self) -> None:
        failing_since: float | None = None
        while not self.closed:
            try:
                index, current = self._read(self._index)
                if index < self._index:
                    self._index, self._reset = 0, True  # went backwards (a snapshot restored, say): re-sync
                    continue
                self._merge(index, current)
                failing_since = None
            except Exception as exc:  # whatever it is must not end the watch silently
                if self.closed:
                    return
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self._retry:
                    error = exc if isinstance(exc, CoordError) else StoreUnavailable(repr(exc), backend=BACKEND)
                    error.key = error.key or self._label(self._key)
                    self._feed.fail(error)
                    return
                time.sleep(0.2)

    def _read(self, index: int) -> tuple[int, dict[str, dict[str, Any]]]:
        """A (blocking, if ``index``) read of the watched key or prefix: its index and entries by coord key."""
        params: dict[str, Any] = {"recurse": "" if self._tree else None}
        if index:
            params.update(index=index, wait=f"{self._wait:g}s")
        answer = self._consul.send("GET", self._path, params)
        if answer.code not in (200, 404):
            raise CoordError(f"Consul answered {answer.code}: {answer.body[:200]}", backend=BACKEND)
        entries = answer.json() if answer.code == 200 else []
        return max(1, answer.index), {self._layout.key_of(entry["Key"]): entry for entry in entries or []}

    # -- what changed ---------------------------------------------------------------------

    def _merge(self, index: int, current: dict[str, dict[str, Any]], *, replay: bool = False) -> None:
        """Deliver what changed up to ``index``: the logged events first, then what only the state tells.

        Any answer whose index moved may hide writes that left no trace in
        the state (a key put and deleted in between), so the log is read for
        those too; after a reset (the index went backwards) the log's old
        records say nothing reliable, and the state alone re-syncs.
        """
        changed = {key for key, entry in current.items() if self._seen.get(key) != _state(entry)}
        changed |= self._seen.keys() - current.keys()
        if not changed and index <= self._index and not replay:
            return
        records: dict[str, list[Record]] = {}
        if self._reset:
            self._feed.resynced()
        else:
            for record in self._records():
                if self._index < record.revision <= index:
                    records.setdefault(record.key, []).append(record)
        events: list[tuple[int, int, str, Event]] = []
        for key in sorted(changed | records.keys()):
            events += self._key_events(key, records.get(key, []), current.get(key), index, replay)
        for revision, _, _, event in sorted(events, key=lambda item: item[:3]):
            if not self.closed:
                self._feed.emit(event)
                self._feed.revision = max(self._feed.revision, revision)
        self._index, self._reset = index, False

    def _key_events(
        self, key: str, records: list[Record], entry: dict[str, Any] | None, index: int, replay: bool
    ) -> list[tuple[int, int, str, Event]]:
        """The events of one key: its logged ones, then what its state at ``index`` says the log missed."""
        out: list[tuple[int, int, str, Event]] = []
        state = self._seen.get(key, _UNKNOWN if replay else None)
        now = _state(entry) if entry is not None else None
        for record in sorted(records, key=lambda r: (r.revision, r.position)):
            if record.type == "delete":
                if state is not None:
                    out.append((record.revision, record.position, key, Event("delete", key, None, record.revision)))
                state = None
                continue
            creates_now = now is not None and record.revision == now[1]
            if creates_now and state is not None and state != _UNKNOWN and state[1] != record.revision:
                # The key was re-created here, so it was deleted before without a record (a session ended).
                out.append((record.revision, -1, key, Event("delete", key, None, record.revision)))
            out.append((record.revision, record.position, key, Event("put", key, record.value, record.revision)))
            created = record.revision if creates_now or state is None or state == _UNKNOWN else state[1]
            state = (record.revision, created)
        if now is None:
            self._seen.pop(key, None)
            if state is not None and (state != _UNKNOWN or records):
                out.append((index, _LAST, key, Event("delete", key, None, index)))  # deleted without a record
            return out
        self._seen[key] = now
        if (state is None or state[0] != now[0]) and now[0] > self._index:  # written without a record
            if state is not None and state != _UNKNOWN and state[1] != now[1]:
                out.append((now[1], -1, key, Event("delete", key, None, now[1])))
            assert entry is not None
            out.append((now[0], _LAST, key, Event("put", key, decode(entry.get("Value")), now[0])))
        return out

    def _records(self) -> list[Record]:
        answer = self._consul.send("GET", "/v1/kv/" + self._layout.log_of(self._key, self._tree), {"recurse": ""})
        if answer.code == 404:
            return []
        if answer.code != 200:
            raise CoordError(f"Consul answered {answer.code}: {answer.body[:200]}", backend=BACKEND)
        found = (self._layout.record(entry) for entry in answer.json() or [])
        return [record for record in found if record is not None and (self._tree or record.key == self._key)]


def _state(entry: dict[str, Any]) -> tuple[int, int]:
    return int(entry["ModifyIndex"]), int(entry["CreateIndex"])
