"""Many reads in one request: ZooKeeper's multiRead (3.6 and later), which kazoo does not offer.

kazoo pipelines asynchronous calls, but its I/O thread handles one request
and one reply per pass of its select loop, so N reads cost N passes (about
0.15 ms each here, more on a loaded host): a list of 100 keys took 35 ms.
A multiRead carries any number of getData and getChildren in one request
and one reply, read by the server in one go (no write is applied between
them). A read that fails gives its exception in place of its result.

A server older than 3.6 answers ``UnimplementedError``; from then on the
reads of that client go as pipelined calls.
"""

from __future__ import annotations

import weakref
from collections import namedtuple
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import EXCEPTIONS, KazooException, NoNodeError, UnimplementedError
from kazoo.protocol.serialization import (
    GetChildren,
    GetData,
    int_struct,
    multiheader_struct,
    read_buffer,
    read_string,
    stat_struct,
    write_string,
)
from kazoo.protocol.states import ZnodeStat

from ._boundary import TRANSIENT, Try

Read = tuple[str, str]  # ("data", path) or ("children", path)
_BATCH = 256  # reads per request: a reply carries up to this many values
_OLD: weakref.WeakSet[KazooClient] = weakref.WeakSet()  # clients whose server has no multiRead


class _MultiRead(namedtuple("_MultiRead", "reads")):  # kazoo's request protocol: type, serialize, deserialize
    type = 22

    def serialize(self) -> bytearray:
        out = bytearray()
        for kind, path in self.reads:
            out += multiheader_struct.pack(GetData.type if kind == "data" else GetChildren.type, False, -1)
            out += write_string(path)
            out.append(0)  # no watch
        out += multiheader_struct.pack(-1, True, -1)
        return out

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> list[Any]:
        results: list[Any] = []
        while True:
            kind, done, _ = multiheader_struct.unpack_from(data, offset)
            offset += multiheader_struct.size
            if done:
                return results
            if kind == GetData.type:
                value, offset = read_buffer(data, offset)
                results.append((value or b"", ZnodeStat._make(stat_struct.unpack_from(data, offset))))
                offset += stat_struct.size
            elif kind == GetChildren.type:
                (count,) = int_struct.unpack_from(data, offset)
                offset += int_struct.size
                names = []
                for _ in range(max(count, 0)):
                    name, offset = read_string(data, offset)
                    names.append(name)
                results.append(names)
            else:
                (code,) = int_struct.unpack_from(data, offset)
                offset += int_struct.size
                results.append(EXCEPTIONS[code]())


class Pending:
    """Reads sent and not yet answered; ``wait`` gives their results in order."""

    def __init__(self, client: KazooClient, reads: list[Read]) -> None:
        self._client, self._reads = client, reads
        self._sent = [self._send(reads[i : i + _BATCH]) for i in range(0, len(reads), _BATCH)]

    def _send(self, reads: list[Read]) -> Any:
        client = self._client
        if client in _OLD:
            return [_one(client, read) for read in reads]
        result = client.handler.async_result()
        client._call(_MultiRead([(kind, client.chroot + path) for kind, path in reads]), result)
        return result

    def wait(self, t: Try) -> list[Any]:
        results: list[Any] = []
        for start, sent in zip(range(0, len(self._reads), _BATCH), self._sent, strict=True):
            if isinstance(sent, list):
                results += [_outcome(t, one) for one in sent]
                continue
            try:
                results += t.wait(sent)
            except UnimplementedError:  # a server older than 3.6: read one by one from now on
                _OLD.add(self._client)
                results += Pending(self._client, self._reads[start : start + _BATCH]).wait(t)
        return results


def send(client: KazooClient, reads: list[Read]) -> Pending:
    """Send ``reads`` on ``client`` now (after whatever was sent before on it); wait for them later."""
    return Pending(client, reads)


def _one(client: KazooClient, read: Read) -> Any:
    kind, path = read
    return client.get_async(path) if kind == "data" else client.get_children_async(path)


def _outcome(t: Try, result: Any) -> Any:
    try:
        return t.wait(result)
    except TRANSIENT:
        raise
    except KazooException as exc:
        return exc


def absent(result: Any) -> bool:
    """Whether a read found nothing; any other failure is raised (the boundary translates it)."""
    if isinstance(result, NoNodeError):
        return True
    if isinstance(result, Exception):
        raise result
    return False
