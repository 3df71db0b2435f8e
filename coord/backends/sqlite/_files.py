"""The files beside the database, in ``<db>-coord/``: wake-up buckets, the write gate, owners' lock files.

::

    <db>-coord/wake/k<nn>     a key bucket: a writer touches (utime) the bucket of every key it
                              changed, after its COMMIT returned; a watch of a key listens there
    <db>-coord/wake/t<nn>     a tree bucket: the writer touches those of the changed keys'
                              ancestors ("a/b" and "a" and "" for "a/b/c"); a tree watch listens
                              to its prefix's
    <db>-coord/gate           touched after every COMMIT: wakes writers waiting for the write lock
    <db>-coord/owners/<id>    one per Store that granted a lease, flock()ed while it lives

Touching a file is one ``utime`` system call, made only for buckets some
process ever listened to (the state row marks them). A bucket is a hash of
the key, so a process wakes only for changes that concern its watches, give
or take a collision in 256; keys and prefixes have buckets apart, so that
the many buckets of single keys (a lock's waiters) do not make every writer
touch the buckets of every ancestor too. The owners' files carry liveness: an owner holds an
exclusive ``flock`` on its file for as long as its Store is open, and the
kernel drops it the moment the process dies (``flock``, not POSIX record
locks, which a process loses when it closes *any* descriptor of the file).
So whoever can take the lock knows the owner is dead; the owner's last
close (its exit) also wakes every listener with ``IN_CLOSE_WRITE``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import uuid
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from ._access import Access

__all__ = ["BUCKETS", "FLOCK", "Files", "Owner", "bucket", "probe"]

if sys.platform != "win32":
    import fcntl

    #: Whether owners' liveness is known (Windows has no flock: leases expire by their ttl only).
    FLOCK = True

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True
else:
    FLOCK = False

    def _try_lock(fd: int) -> bool:
        return False


#: Key buckets are 0-255, tree buckets 256-511.
BUCKETS = 512
_SPREAD = BUCKETS // 2


def bucket(key: str, tree: bool = False) -> int:
    """The wake-up bucket of a key's watches, or (``tree``) of a prefix's tree watches."""
    return zlib.crc32(key.encode()) % _SPREAD + (_SPREAD if tree else 0)


def _buckets_of(keys: Iterable[str]) -> set[int]:
    """Buckets to touch for changes of ``keys``: each key's, and each ancestor's tree bucket."""
    found: set[int] = set()
    for key in keys:
        found.add(bucket(key))
        found.update(_trees_above(key.rpartition("/")[0]))
    return found


@functools.lru_cache(maxsize=4096)
def _trees_above(prefix: str) -> tuple[int, ...]:
    """The tree buckets of ``prefix`` and of each of its ancestors, the root included (prefixes repeat)."""
    found = [bucket("", True)]
    while prefix:
        found.append(bucket(prefix, True))
        prefix = prefix.rpartition("/")[0]
    return tuple(found)


class Files:
    """Paths of one database's side files, and the touches a writer makes after it commits."""

    def __init__(self, db: Path, access: Access) -> None:
        self.dir = Path(f"{db}-coord")
        self.wake = self.dir / "wake"
        self.owners = self.dir / "owners"
        self.gate = str(self.dir / "gate")
        self.access = access
        sqlite_files = [Path(f"{db}{suffix}") for suffix in ("-wal", "-shm", "-journal")]
        access.check([db, *sqlite_files, self.dir, self.wake, self.owners, Path(self.gate)])
        access.touch(db)  # before SQLite creates it (0644): its -wal and -shm take its mode
        for folder in (self.wake, self.owners):
            access.make_dirs(folder)
        self._gate_fd = access.create(self.gate, os.O_RDWR)
        self._wake = [str(self.wake / f"{'kt'[n // _SPREAD]}{n % _SPREAD:02x}") for n in range(BUCKETS)]

    def bucket_path(self, number: int) -> str:
        """The bucket's file, created if absent (by a listener, before it listens)."""
        path = self._wake[number]
        if not os.path.exists(path):
            self.access.touch(path)
        return path

    def committed(self, keys: list[str], listened: bytes) -> None:
        """After a COMMIT: wake the writers waiting for the lock, then the listeners of the keys changed.

        ``listened`` marks the buckets some process ever listened to (the
        state row's bits, read in the same transaction): the others have no
        listener, so they cost nothing. A listener marks its bucket in a write
        before it reads where its watch starts, so a commit it did not see
        sees its mark.
        """
        with contextlib.suppress(OSError):
            os.utime(self._gate_fd)
        if keys and any(listened):
            for number in _buckets_of(keys):
                if listened[number >> 3] & (1 << (number & 7)):
                    with contextlib.suppress(OSError):
                        os.utime(self._wake[number])

    def close(self) -> None:
        fd, self._gate_fd = self._gate_fd, -1
        if fd >= 0:
            os.close(fd)


class Owner:
    """This Store's lock file, created and locked on its first lease grant; named in each lease row."""

    def __init__(self, folder: Path, access: Access) -> None:
        self._folder = folder
        self._access = access
        self.name: str | None = None
        self._fd = -1

    def ensure(self) -> str | None:
        """The owner's name, its file locked from now until ``release``; ``None`` without flock."""
        if self.name is not None or not FLOCK:
            return self.name
        name = uuid.uuid4().hex
        fd = self._access.create(self._folder / name, os.O_RDWR)
        if not _try_lock(fd):  # a fresh name: nobody else can hold it
            os.close(fd)
            raise OSError(f"cannot lock {self._folder / name}")
        self.name, self._fd = name, fd
        return name

    def release(self) -> None:
        """At close: remove the file, then drop the lock (the last close wakes the listeners)."""
        if self.name is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._folder / self.name)
        self.forget()

    def forget(self) -> None:
        """Close the descriptor, keep the file: a forked child's copy (the parent still holds the lock)."""
        fd, self._fd, self.name = self._fd, -1, None
        if fd >= 0:
            os.close(fd)


@contextlib.contextmanager
def probe(folder: Path, name: str) -> Iterator[bool]:
    """Whether the owner ``name`` is dead; while the block runs, its lock is held (so it stays dead).

    Opened read-only, so the probe's own close does not look like an owner's
    exit to the listeners (they listen for IN_CLOSE_WRITE only). A missing
    file is a dead owner too: files are removed only by their owner at close,
    after it revoked its leases, or by the prober that reaped them.
    """
    path = folder / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False
        return
    try:
        if not _try_lock(fd):
            yield False
            return
        yield True
        with contextlib.suppress(OSError):
            os.unlink(path)
    finally:
        os.close(fd)
