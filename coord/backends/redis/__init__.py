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
- ``{ns}:leaseid`` the counter of lease ids
- ``{ns}:meta``    hash: ``epoch``, ``boot`` (the run id of the server the epoch
  started on) and ``due`` (no later than the earliest lease or ttl deadline)
- ``{ns}:req:<id>`` the replies of recent mutations (see *Retries*)
- ``{ns}:watched`` hash, ``=key`` or ``/prefix`` -> the ``bell.token`` of each watch on it
- ``{ns}:bell:<id>`` a Store's bell: a stream of one entry, rung for the changes its watches cover

Every operation is one Lua script (EVALSHA) declaring the one key ``{ns}``,
so it is atomic and one round trip; a transaction too. Deadlines are on the
server's clock (``TIME``), so client clocks do not matter. A script deletes
the leases and ttl keys whose deadline has passed, with their delete events,
before anything else, when ``meta.due`` says something may be due.

Watches. One thread and one connection per Store read the change log for
all of its watches; each watch remembers the next revision it needs and the
keys it was told are present. The thread blocks on the Store's bell, which
scripts ring only for changes its watches cover (no herd of readers), and
reads the log in the same send, and at least every 0.5 s. A watch opens with a script
that reads the state and the current revision atomically. If the revisions
a watch needs were trimmed, it re-syncs: puts for what changed, deletes for
what is gone. While a Store has watches it also reaps at the earliest
deadline the server reports (a timer on the Store's clock), so watchers
hear of a dead holder's keys within a round trip or two of its deadline.

Epochs. Redis can lose acknowledged writes: AOF ``everysec`` loses up to a
second to an OS crash, and a failover loses what the promoted replica had
not received. Every new connection runs the ``boot`` script before any
other command: a server whose run id is not the one in ``meta.boot``
restarted or took over, so it starts a new epoch there (see
``_scripts.new_epoch``): revisions and lease ids jump past every one handed
out before, lost or not, and a log entry tells watches where the surviving
history ends. The Store marks all its leases lost.

Retries. Connection errors and timeouts are retried (tenacity) within
``timeout``, then ``StoreUnavailable``. A mutation whose reply was lost may
have been applied, so each carries a request id and its script stores its
reply under ``{ns}:req:<id>`` for ``timeout`` + 10 s: a retry returns that
reply instead of applying the change twice, so a create-only write that
succeeded is never reported as ``KeyExists``. A mutation that still ends in
``StoreUnavailable`` has an unknown outcome: it may have been applied, or be
applied later by a server that was frozen rather than gone. Option
``replicas=N`` makes every write wait (``WAIT``) for N replicas.

Identity. A user and password in the URL authenticate every connection;
``rediss://`` or a ``tls_*`` option turns TLS on, the server's certificate
checked against ``tls_ca`` and the URL's host. A refused identity (wrong
password, a missing ACL permission, a certificate either side refuses) is a
``ConfigurationError`` at once: no retry can fix it.

Modules: ``_scripts`` (the Lua scripts), ``_replies`` (how their replies and
errors read in Python), ``_wire`` (the connections: scripts packed once, the
boot check on each new connection), ``_identity`` (the connection options:
user, password, TLS; and which failures are a refused identity), ``_feed``
(the one watch thread of a Store, its bell and the reaper timer) and
``_store`` (the Store methods, and the one boundary where redis-py's errors
become coord's).
"""

from ._store import RedisStore

__all__ = ["RedisStore"]
