"""Linux inotify, through ctypes: the wake-ups that replace polling where the kernel has them.

Three calls of the C library (``inotify_init1``, ``inotify_add_watch``,
``inotify_rm_watch``) and ``os.read``: small enough not to need a
dependency. ``Inotify.open()`` returns ``None`` where inotify is missing
(not Linux, or no instances left); callers then poll.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys

__all__ = ["IN_ATTRIB", "IN_CLOSE_WRITE", "IN_IGNORED", "IN_Q_OVERFLOW", "Inotify"]

IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return libc


_LIBC = _libc()


class Inotify:
    """One inotify instance (a non-blocking, close-on-exec descriptor)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls) -> Inotify | None:
        if _LIBC is None:
            return None
        fd = int(_LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        return None if fd < 0 else cls(fd)

    def add(self, path: str, mask: int) -> int:
        """Watch ``path`` for the events in ``mask``; the watch descriptor (the same one for the same file)."""
        assert _LIBC is not None
        wd = int(_LIBC.inotify_add_watch(self.fd, os.fsencode(path), mask))
        if wd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), path)
        return wd

    def remove(self, wd: int) -> None:
        assert _LIBC is not None
        _LIBC.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[tuple[int, int, str]]:
        """The pending events as ``(wd, mask, name)``; ``[]`` if none."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + length].rstrip(b"\0").decode(errors="replace")
            offset += length
            events.append((wd, mask, name))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
