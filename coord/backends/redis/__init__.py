"""``redis://host:port[/db]`` (``rediss://`` for TLS): the Store on one Redis primary.

Layout. Everything lives under one hash tag, ``{coord}`` by default (option
``namespace``), so a store fits in one Redis Cluster slot:

- ``{ns}:kv``      hash, key -> ``"revision:created:lease:" + value``
- ``{ns}:idx``     sorted set of every key (score 0), read with ZRANGEBYLEX for ``list``
- ``{ns}:ttl``     sorted set, key -> deadline (server ms) of ``put(ttl=)`` keys
- ``{ns}:leases``  sorted set, lease id -> deadline (server ms)
- ``{ns}:lkeys``   sorted set of ``"<lease>/<key>"`` (score 0): the keys of each lease
- ``{ns}:rev``     the global counter: every change takes the next revision
- ``{ns}:log``     stream, one entry ``<revision>-0`` per change, trimmed to about
  ``history`` entries (default 100 000): what watches read and replay
- ``{ns}:leaseid`` the counter of lease ids; ``{ns}:req:<id>`` the replies of
  recent mutations (see *Retries*)

Every operation is one Lua script (EVALSHA), so it is atomic, and every
script first deletes the leases and ttl keys whose deadline has passed, with
their delete events. Deadlines are on the server's clock (``TIME``), so
client clocks do not matter. A Store with open watches also runs that reaper
every 0.5 s. A dead lease's keys therefore vanish at its deadline for anyone
reading them through coord, and a watcher sees their delete events within
0.5 s of it: inside the contract's ttl + 1 s.

Watches. One thread and one connection per Store read the change log with
XREAD BLOCK for all of its watches; each watch remembers the next revision
it needs. A watch opens with a script that reads the state and the current
revision atomically. If the revisions a watch needs were trimmed, it
re-syncs by emitting the current state. After a lost connection the reader
checks the log still holds what it last read; a server that came back
without its last writes (AOF ``everysec`` loses up to one second) makes
every watch re-sync instead of skipping the revisions now used again.

Retries. Connection errors and timeouts are retried (tenacity) within
``timeout``, then ``StoreUnavailable``. A mutation whose reply was lost may
have been applied, so each carries a random request id and its script stores
its reply under ``{ns}:req:<id>`` for ``timeout`` + 10 s: a retry returns
that reply instead of applying the change twice, so a create-only write that
succeeded is never reported as ``KeyExists``. A mutation that still ends in
``StoreUnavailable`` has an unknown outcome: it may have been applied, or be
applied later by a server that was frozen rather than gone.

Modules: ``_scripts`` (the Lua scripts and how their replies read),
``_feed`` (the one watch thread of a Store) and ``_store`` (the Store
methods, and the one boundary where redis-py's errors become coord's).
"""

from ._store import RedisStore

__all__ = ["RedisStore"]
