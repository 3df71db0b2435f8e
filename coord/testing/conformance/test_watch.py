"""Watches: the current state first, then every change once and in order; history from a revision.

Part of the Store conformance suite (``coord.testing.conformance``).
"""

from __future__ import annotations

import threading

import pytest

import coord
from coord import StoreClosed

from ._events import drain, put_event, summary


def test_watch_sees_current_state_then_changes_in_order(store: coord.Store) -> None:
    store.put("w", b"0")
    with store.watch("w") as watch:
        assert summary(drain(watch, 1)) == [put_event("w", b"0")]
        store.put("w", b"1")
        store.put("other", b"x")
        store.delete("w")
        store.put("w", b"2")
        events = drain(watch, 3)
    assert summary(events) == [put_event("w", b"1"), ("delete", "w", None), put_event("w", b"2")]
    revisions = [event.revision for event in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3


def test_watch_of_an_absent_key_starts_quiet(store: coord.Store) -> None:
    with store.watch("later") as watch:
        assert watch.get(timeout=0.3) is None
        store.put("later", b"now")
        assert summary(drain(watch, 1)) == [put_event("later", b"now")]


def test_watch_tree_sees_children_and_nothing_else(store: coord.Store) -> None:
    store.put("tree/a", b"1")
    store.put("tree", b"self")
    with store.watch_tree("tree") as watch:
        assert summary(drain(watch, 1)) == [put_event("tree/a", b"1")]
        store.put("treehouse", b"no")
        store.put("tree/b/c", b"2")
        store.delete("tree/a")
        store.put("elsewhere", b"no")
        store.delete_tree("tree")
        events = drain(watch, 3)
        assert watch.get(timeout=0.3) is None
    assert summary(events) == [put_event("tree/b/c", b"2"), ("delete", "tree/a", None), ("delete", "tree/b/c", None)]


def test_watch_from_a_start_revision_replays_history(store: coord.Store) -> None:
    first = store.put("h", b"1")
    store.put("h", b"2")
    store.delete("h")
    store.put("h", b"3")
    with store.watch("h", start_revision=first.revision) as watch:
        events = drain(watch, 4)
    assert summary(events) == [put_event("h", b"1"), put_event("h", b"2"), ("delete", "h", None), put_event("h", b"3")]
    assert events[0].revision == first.revision


def test_watch_close_ends_iteration(store: coord.Store) -> None:
    watch = store.watch_tree("")
    done = threading.Event()

    def consume() -> None:
        for _ in watch:
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    watch.close()
    assert done.wait(5)
    with pytest.raises(StoreClosed):
        watch.get(timeout=0)
