"""``zookeeper://[user:password@]host:port[,host:port...][/chroot]`` (alias ``zk://``; ``zookeepers://`` for TLS):
the Store on ZooKeeper, through kazoo.

Layout, under the ``root`` option (default ``/coord``) inside the URL's chroot
(which must exist, as for any ZooKeeper client)::

    ROOT/kv/a/b/=c       key "a/b/c": a small header, then the value
    ROOT/kv/a/b/~c       its guard, created and deleted with it (``_keys``)
    ROOT/kv/a/b/~c/<id>.<n>  while the value is over 400 KiB: the marker of its chunks
    ROOT/kv/a/b          bare directories: never keys, so "a/b" and "a/b/c" coexist
    ROOT/log/e<hash>.<seq>  the change log that feeds watches, the last ``history`` writes (``_log``)
    ROOT/log/b<seq>      a free record: chunks to delete once the log is trimmed past it
    ROOT/blob/<id>.<n>   the chunks of values over 400 KiB (``_blobs``)

Revisions: ``revision`` = mzxid, ``created`` = czxid, both ZooKeeper
transaction ids, so ``created`` strictly increases in creation order.
Every write is one ZooKeeper multi-op that also appends its event to the
log; the log entry's czxid is the write's zxid. A plain ``put`` and a
create-only put are one round trip; a compare-and-swap is two: read the
stat, compare its mzxid, then write conditionally on that stat's version. A
key deleted and re-created to the same version between those two steps
(well under a millisecond here) would pass the version check: that is the
one window where CAS is not exact. A value over 400 KiB costs a read and a
round trip per 900 KiB chunk more. A transaction is one multi-op too, its
reads sent right behind it (``_transactions``); writes bound to leases of
different ttls cannot share one, as a multi-op runs on one session.

Watches never miss, repeat or reorder: they read the log, not the znodes.
The server announces each new entry (a persistent watch, ``_notify``), the
Store reads those its watches may want, and one worker thread per Store
(``_worker``) feeds every watch of the Store; older than the log's history,
a watch re-syncs: puts for what changed, deletes for what is gone. Reads
go through a session that has seen the Store's newest write, whichever
session made it (``_boundary``), and many of them go in one request
(multiRead, ``_reads``).

Leases are ephemeral znodes, one extra ZooKeeper session per distinct lease
ttl (``_sessions``). A session that expires deletes its ephemerals without a
log entry; the key's guard, left behind, stops anyone re-creating the key
until some client logs that delete: the lease's owner if it still runs,
every Store watching the key, and the next writer of the key.

ttl keys are persistent znodes whose header carries the ttl; they expire at
the server's mtime + ttl, are invisible to every read once expired, and are
deleted (with a logged delete) by the Store that wrote them and by every
Store watching them, at expiry. A ttl key whose writer and watchers are all
gone stays on the server, invisible, until some write or watch reaps it;
so do the chunks of a big value held by such a key or by an expired lease
key that nobody reaps.

Security (``_security``): every session of the Store authenticates with the
URL's digest credentials, and every znode it creates gets the ``acl``
option's ACL: by default every permission to that identity only with
credentials, ZooKeeper's open ACL without. An identity the server or an ACL
refuses, and a refused certificate, raise ``ConfigurationError`` at once.

Modules: ``_layout`` (paths, escaping, the header), ``_boundary`` (the one
place kazoo's errors become coord's), ``_security`` (TLS, digest, ACLs), ``_reads`` and ``_notify`` (the two
ZooKeeper 3.6 requests kazoo lacks: multiRead, persistent watches),
``_blobs``, ``_keys`` (reads and deletes shared by all), ``_writes``,
``_transaction_plan`` and ``_transactions``, ``_log``, ``_worker``,
``_sessions`` and ``_store`` (the Store methods).
"""

from ._store import ZooKeeperStore

__all__ = ["ZooKeeperStore"]
