"""Values over 400 KiB: chunks under ROOT/blob, and the records that make sure they are freed.

A value and its copy in the log must fit one ZooKeeper packet (1 MiB), so a
bigger one is written as chunks first, and the key's header points at them.
Who owns a blob's chunks, at every moment:

- while being written: a free record ROOT/log/b<seq> naming the chunks that
  exist. Each chunk is created in one multi-op with the record (first chunk)
  or with a bump of the record's version (later ones), so no chunk ever
  exists unowned, whatever crashes when;
- once the key's write commits: the key. That multi-op deletes the record and
  creates a marker under the key's guard;
- once the value is dropped (overwritten, deleted, expired, its lease gone):
  a new free record, created in the multi-op that drops it, together with
  the marker's delete. ZooKeeper refuses to delete a guard that still has a
  marker, so no path that deletes a key can forget its chunks.

The trimmer frees a record (its chunks, then it, in one multi-op) once it has
trimmed the log past the record: until then a lagging watch may still need
the chunks to deliver the write that stored them. So the chunks of a dropped
value, or of a writer that crashed, stay until the log has moved ``history``
entries past them and a trim ran (every 64th write of some Store); with no
further writes, they stay. A watch that finds chunks gone was behind the
trim, and re-syncs like one that lost log entries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from kazoo.exceptions import NoNodeError

from ._boundary import Boundary, Failed, Op, Retry, Try
from ._layout import CHUNK, Blob, Layout, Node

log = logging.getLogger("coord.zookeeper")


class Blobs:
    def __init__(self, zk: Boundary, layout: Layout) -> None:
        self._zk, self._folder, self._log = zk, layout.blob, layout.log

    def read(self, t: Try, node: Node) -> bytes:
        """The value ``node`` holds, from its chunks if it has any."""
        if node.blob is None:
            return node.value
        results = [self._zk.client.get_async(path) for path in node.blob.chunks(self._folder)]
        try:
            return b"".join(t.wait(result)[0] for result in results)
        except NoNodeError:  # the value was replaced and its chunks freed since we read the key
            raise Retry("the value's chunks are gone") from None

    def stage(self, t: Try, value: bytes) -> tuple[Blob, str]:
        """Write a big value's chunks, before the write that points at them; return them and their free record."""
        pieces = [value[i : i + CHUNK] for i in range(0, len(value), CHUNK)]
        blob = Blob(os.urandom(8).hex(), len(pieces))
        record = ""
        for i, (path, piece) in enumerate(zip(blob.chunks(self._folder), pieces, strict=True)):
            made = Blob(blob.id, i + 1).name  # the record always names the chunks that exist
            claim = ("free", made) if i == 0 else ("set", record, made.encode(), i - 1)
            try:
                results = self._zk.commit(t, [claim, ("create", path, piece)])
            except Failed as exc:
                if exc.op == claim:  # the trimmer freed what we wrote so far: start over
                    raise Retry("the staged value was freed") from None
                raise
            record = record or results[0]
        return blob, record

    def free(self, t: Try, record: str) -> None:
        """Delete a free record and the chunks it names, in one multi-op (a no-op if another Store did)."""
        try:
            data, stat = t.wait(self._zk.client.get_async(record))
        except NoNodeError:
            return
        chunks = Blob.parse(data.decode()).chunks(self._folder)
        try:  # the version check loses to a writer still adding chunks: it is freed at a later trim
            self._zk.commit(t, [("delete", record, stat.version), *(("delete", chunk) for chunk in chunks)])
        except Failed as exc:
            log.debug("freeing %s: %r", record, exc.error)

    def free_older(self, t: Try, names: list[str], trimmed: int) -> None:
        """Free the records older than ``trimmed``, the last log entry trimmed: no watch can need them now."""
        for seq in Layout.seqs(names, "b"):
            if seq < trimmed:
                self.free(t, f"{self._log}/b{seq:010d}")

    @staticmethod
    def link(guard: str, blob: Blob, record: str) -> list[Op]:
        """The operations that make a key's new value own its staged chunks."""
        return [("create", f"{guard}/{blob.name}", b""), ("delete", record)]

    @staticmethod
    def unlink(guard: str, blobs: Iterable[Blob]) -> list[Op]:
        """The operations that hand a key's old chunks to a free record."""
        return [op for blob in blobs for op in (("delete", f"{guard}/{blob.name}"), ("free", blob.name))]

    def markers(self, t: Try, guard: str) -> list[Blob]:
        """The chunks a guard's markers say its key holds (none if the guard is gone)."""
        try:
            return [Blob.parse(name) for name in t.wait(self._zk.client.get_children_async(guard))]
        except NoNodeError:
            return []
