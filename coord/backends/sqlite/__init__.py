"""``sqlite:///path/to/file.db``: the embedded store, shared by the processes of one host.

Every mutation is one ``BEGIN IMMEDIATE`` transaction that bumps a global
revision and appends each change to a change log, so a crash mid-write
leaves nothing half-written (SQLite's WAL rolls the transaction back). Reads
are one statement each. After its COMMIT a writer touches small files
beside the database, and the kernel (inotify) wakes the processes whose
watches concern the keys it changed, or whose writers wait for the lock:
nobody polls.

Liveness: a Store that grants a lease holds an ``flock`` on a lock file of
its own, named in the lease. A process that dies drops its locks, the
kernel tells every watching process, and the first to take the dead
owner's lock reaps its leases at once, whatever their ttl. A process that
is alive but stopped keeps its leases until their deadline. Deadlines are
on the host's boot clock (``CLOCK_BOOTTIME``: no NTP or manual step moves
them, suspended time counts) and a reboot voids them all.

The change log keeps the last ``history`` changes (default 100,000) and at
most ``history_bytes`` of them (default 16 MiB); space trimmed beyond a
reserve goes back to the file system. A watch that falls behind re-syncs:
puts for what changed, deletes for what went.

Modules, one job each:

- ``_store``: the Store operations, leases, watches, fork;
- ``_db``: a connection and its transactions, and fork-safety (SQLite idle
  at the fork, the child's inherited connections closed); ``_boundary``:
  SQLite errors become coord's, and a busy file is waited for (the gate);
- ``_writes``: the inside of one write transaction (log, reap, trim);
  ``_reads``: the read statements;
- ``_schema``: the tables, migration from the first layout, reboots;
- ``_watcher``: the thread that feeds watches and reaps;
- ``_files``: the side files (wake-up buckets, the gate, owners' locks);
  ``_inotify``: the kernel's wake-ups; ``_host``: the clock and the boot;
- ``_access``: who may open the store (0700/0600 whatever the umask,
  another user's files refused unless ``shared=true``).

Limits: one host (SQLite's locking and flock are not for network file
systems); writers are serialised. docs/backends.md says what each
guarantee survives (clock steps, suspend, reboot, fork).
"""

from ._store import SQLiteStore

__all__ = ["SQLiteStore"]
