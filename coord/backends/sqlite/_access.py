"""Who may open the store: its files' modes and owners, checked and set before SQLite opens anything.

A **private** store (the default) is its user's alone. The directories
coord creates for it are 0700 and its files 0600, whatever the umask; a
store file or side directory whose mode lets others in (one written by an
older coord, made 0644 by the umask) is made private on open, with a
warning; and a file or directory of the store that belongs to another user
is refused (``ConfigurationError``), since writing to it would hand that
user this process's keys, and files this process created there (SQLite's
``-shm``, say) could lock the owner out of their own store. Directories
that exist already and are not the store's own (the parent of a path the
user gave) are left as they are.

A **shared** store (``shared=true``) is for several users' services: files
of another user are accepted, nothing is made private, and what coord
creates gets the modes the umask gives (with umask 002 and a setgid
directory of a common group, that group can read and write it). Every
process that opens a shared store passes ``shared=true``: one that does not
would make the store private to its owner again, or be refused.

SQLite creates the ``-wal`` and ``-shm`` files with the mode of the
database file, so creating that file with the right mode is enough.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from pathlib import Path

from ..._errors import ConfigurationError

__all__ = ["Access"]

log = logging.getLogger("coord.sqlite")

_announced: set[Path] = set()
_announced_lock = threading.Lock()


class Access:
    """The modes coord gives what it creates for one store, and the checks it makes before opening it."""

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        # Shared: the umask decides. Private: exactly these, set again after creation (the umask can take bits away).
        self.dir_mode = 0o777 if shared else 0o700
        self.file_mode = 0o666 if shared else 0o600

    def make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, with the store's directory mode; existing ones are left alone."""
        missing: list[Path] = []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            try:
                os.mkdir(path, self.dir_mode)
            except FileExistsError:  # another process, meanwhile
                continue
            self._fix(path, self.dir_mode)

    def create(self, path: Path | str, flags: int = os.O_RDONLY) -> int:
        """A descriptor of the file ``path``, created with the store's file mode if it did not exist."""
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.file_mode)
        except FileExistsError:
            return os.open(path, flags | os.O_CLOEXEC)
        if not self.shared:
            with contextlib.suppress(OSError):
                os.fchmod(fd, self.file_mode)
        return fd

    def touch(self, path: Path | str) -> None:
        """Create the file ``path`` if it is missing (with the store's file mode)."""
        os.close(self.create(path))

    def check(self, paths: list[Path]) -> None:
        """Before opening the store: refuse another user's ``paths``, make ours private (neither when shared).

        ``paths`` are the store's own files and directories; one that does not
        exist yet is skipped (it will be created with the store's mode).
        """
        me = _euid()
        if self.shared or me is None:
            return
        opened: list[str] = []
        for path in paths:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ConfigurationError(f"cannot read the attributes of {path}: {exc}", backend="sqlite") from exc
            if info.st_uid != me:
                raise ConfigurationError(_not_yours(path, info.st_uid, me), backend="sqlite")
            if stat.S_IMODE(info.st_mode) & 0o077:
                opened.append(f"{path} (was {stat.S_IMODE(info.st_mode):04o})")
                self._fix(path, 0o700 if stat.S_ISDIR(info.st_mode) else 0o600)
        if opened:
            log.warning(
                "made the sqlite store private (files 0600, directories 0700): %s; pass shared=true to share it"
                " with other users",
                ", ".join(opened),
            )

    def announce(self, db: Path) -> None:
        """Log, once per path and process, which store this process uses (INFO, logger ``coord.sqlite``)."""
        with _announced_lock:
            if db in _announced:
                return
            _announced.add(db)
        whose = "shared (shared=true: modes by the umask, any owner)" if self.shared else "private to this user"
        log.info("sqlite store %s: %s", db, whose)

    def _fix(self, path: Path, mode: int) -> None:
        if not self.shared:
            try:
                os.chmod(path, mode)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot make {path} private (chmod {mode:04o}): {exc}", backend="sqlite"
                ) from exc


def _euid() -> int | None:
    geteuid = getattr(os, "geteuid", None)  # None on Windows: no owners to compare
    return None if geteuid is None else int(geteuid())


def _not_yours(path: Path, owner: int, me: int) -> str:
    return (
        f"{path} belongs to {_user(owner)}, not to {_user(me)}: coord opens another user's sqlite store only"
        " when told to, with ?shared=true in the URL (or connect(..., shared=True)); every process sharing"
        " it must pass shared=true (docs/backends.md, sqlite, 'Private by default')"
    )


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
