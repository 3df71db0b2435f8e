"""The exit statuses of ``coord``, in one place (docs/cli.md has the table).

Commands that run a CMD (``lock``, ``elect``, ``register``) exit with CMD's
status, so their own outcomes use the statuses that wrappers conventionally
keep for themselves (``timeout(1)``, ``env(1)``, the shells): 123-127. The
other commands use small numbers.
"""

from __future__ import annotations

import signal

__all__ = [
    "CANNOT_EXECUTE",
    "COMMAND_NOT_FOUND",
    "ERROR",
    "INTERRUPTED",
    "LOST",
    "NOT_FOUND",
    "OK",
    "TIMED_OUT",
    "UNAVAILABLE",
    "USAGE",
    "WRAPPER_FAILED",
    "signalled",
]

OK = 0
#: The store refused or failed the operation (the message says why).
ERROR = 1
#: A bad command line, URL or option, or a backend whose client library is missing.
USAGE = 2
#: ``get`` or ``rm`` of a key that does not exist.
NOT_FOUND = 3
#: The store did not answer within its timeout (``coord doctor``: it is unreachable).
UNAVAILABLE = 4

#: ``lock``/``elect``: the lock or leadership was lost while CMD ran; CMD was terminated.
LOST = 123
#: ``lock``/``elect``: not obtained within ``--timeout``; CMD was not run.
TIMED_OUT = 124
#: ``lock``/``elect``/``register``: coord itself failed (store unreachable, bad URL); CMD was not run or was ended.
WRAPPER_FAILED = 125
#: CMD exists but could not be executed (as the shells report it).
CANNOT_EXECUTE = 126
#: CMD was not found (as the shells report it).
COMMAND_NOT_FOUND = 127


def signalled(signum: int) -> int:
    """The status of a process ended by signal ``signum``, as the shells report it: 128 + N."""
    return 128 + int(signum)


INTERRUPTED = signalled(signal.SIGINT)
