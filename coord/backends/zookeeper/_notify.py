"""Hearing of every log entry as it is created: ZooKeeper's persistent recursive watch (3.6 and later), which kazoo lacks.

A persistent recursive watch on ROOT/log (``addWatch``) makes the server
send a NodeCreated notification, with the entry's name, for every entry
created while the session is connected, in order, with no re-arming. A
child watch would fire once and need a listing of the whole log (its
``history`` names) to re-arm and to learn what is new: for every write,
in every Store that watches. The server forgets the watch when the
connection drops; the Store adds it again and lists the log once.

kazoo hands notifications to the watchers it registered, by path; it knows
nothing of this one. ``hook`` puts a function in front of kazoo's, on its
I/O thread, that takes the notifications under ROOT/log and passes the rest
on. It must not block: it only queues work.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.serialization import Watch, int_struct, write_string

_CREATED = 1  # NodeCreated, in ZooKeeper's notifications
_RECURSIVE = 1  # AddWatchModes.persistentRecursive
_ANY = 3  # WatcherType.Any: every watch of this session on the path


class _AddWatch(namedtuple("_AddWatch", "path mode")):
    type = 106

    def serialize(self) -> bytearray:
        out = bytearray(write_string(self.path))
        out += int_struct.pack(self.mode)
        return out

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> bool:
        return True


class _RemoveWatches(namedtuple("_RemoveWatches", "path kind")):
    type = 18

    def serialize(self) -> bytearray:
        out = bytearray(write_string(self.path))
        out += int_struct.pack(self.kind)
        return out

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> bool:
        return True


def add(client: KazooClient, path: str) -> Any:
    """Start the persistent recursive watch on ``path``; kazoo's pending result (``UnimplementedError`` before 3.6)."""
    result = client.handler.async_result()
    client._call(_AddWatch(client.chroot + path, _RECURSIVE), result)
    return result


def remove(client: KazooClient, path: str) -> Any:
    """Stop it (and any other watch of this session on ``path``)."""
    result = client.handler.async_result()
    client._call(_RemoveWatches(client.chroot + path, _ANY), result)
    return result


def hook(client: KazooClient, path: str, created: Callable[[str], None]) -> None:
    """Call ``created(name)`` on kazoo's I/O thread for each child of ``path`` created while watched."""
    connection = client._connection
    passed_on = connection._read_watch_event
    below = client.chroot + path + "/"

    def read_watch_event(buffer: bytes, offset: int) -> None:
        watch, _ = Watch.deserialize(buffer, offset)
        if not watch.path.startswith(below):
            passed_on(buffer, offset)  # ROOT/log itself included: the child watch of servers before 3.6
        elif watch.type == _CREATED:
            created(watch.path[len(below) :])

    connection._read_watch_event = read_watch_event
