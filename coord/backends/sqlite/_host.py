"""The host's clock and boot, which every deadline in the file counts by.

Deadlines in the file are shared by every process of the host, so they need
a clock that all of them read alike, that nobody can set, and that keeps
counting while the machine is suspended (a lease must not outlive its ttl
because the laptop slept). On Linux that is ``CLOCK_BOOTTIME``: seconds
since boot, suspended time included, immune to NTP steps and to
``date -s``. It restarts at each boot, so the file records the boot it
counts from (``/proc/sys/kernel/random/boot_id``), and a store opened after
a reboot expires every lease and ttl key at once: no process of the old
boot is alive.

Elsewhere the clock is ``time.monotonic()`` (host-wide on macOS, the BSDs
and Windows; whether it counts suspended time depends on the system) and
the boot is recognised by the clock reading less than the file last saw.
A process in a Linux time namespace with a shifted ``CLOCK_BOOTTIME`` must
not share a store with processes outside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["BOOT_ID", "now"]

_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return ""


def _clock() -> Callable[[], float]:
    if _BOOTTIME is not None:
        clock_id = _BOOTTIME
        try:
            time.clock_gettime(clock_id)
        except OSError:  # an old kernel: fall back
            return time.monotonic
        return lambda: time.clock_gettime(clock_id)
    return time.monotonic


#: Seconds on the host's shared clock (see the module docstring).
now: Callable[[], float] = _clock()
#: This boot's identity ("" where the system does not say).
BOOT_ID: str = _boot_id()
