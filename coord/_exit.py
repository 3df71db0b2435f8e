"""A clean exit is not a crash: when the process ends normally, or on SIGTERM, its Stores close first.

Closing a Store revokes its leases, so the process's sessions end at once
and whoever waits for its locks or leadership takes over within one round
trip, rather than one ttl later. This is client-go's ``ReleaseOnCancel``
for a whole process:

- at a normal interpreter exit (``atexit``);
- on SIGTERM, if the application installed no handler of its own: coord's
  handler closes the Stores, then restores the default action and sends the
  signal again, so the process ends exactly as it would have (killed by
  SIGTERM). A handler the application installs later replaces coord's; one
  installed earlier is never replaced.

Closing is bounded: the Stores get about one second in all, after which the
process goes on ending (the server expires what is left). A process that
dies of SIGKILL, or is frozen, keeps its sessions until they expire, as it
must. ``connect(..., release_on_exit=False)`` leaves a Store out.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import weakref
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["BUDGET", "enroll"]

#: Seconds the Stores get to close at exit.
BUDGET = 1.0

_stores: weakref.WeakSet[Store] = weakref.WeakSet()
_lock = threading.Lock()
_installed = False


def enroll(store: Store) -> None:
    """Close ``store`` when this process exits normally or on SIGTERM."""
    global _installed
    with _lock:
        _stores.add(store)
        if _installed:
            return
        _installed = True
    atexit.register(release_all)
    # Only the main thread may set a handler; and never in place of the application's own.
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def release_all(budget: float = BUDGET) -> None:
    """Close every enrolled Store still open, within ``budget`` seconds in all."""
    with _lock:
        stores = [store for store in _stores if not store.closed]
    if not stores:
        return
    closer = threading.Thread(target=_close_all, args=(stores,), name="coord-exit", daemon=True)
    closer.start()
    closer.join(timeout=budget)


def _close_all(stores: list[Store]) -> None:
    for store in stores:
        with contextlib.suppress(Exception):  # the process is ending: the server expires what was not revoked
            store.close()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    release_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _forget_after_fork() -> None:
    # A child's Stores are its own; the parent's are closed in the child (see ``Store._forsake``).
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
