"""``etcd2://[user:password@]host:port[,host:port...]`` (``etcd2s://`` for TLS): the Store on etcd's v2 HTTP API.

For etcd 3.4 started with ``--enable-v2=true`` (its v2 store is apart from
the v3 one: what one API writes, the other does not see), over HTTP/1.1 with
kept-alive connections (urllib3). Layout, under the ``root`` option (default
``/coord``)::

    ROOT/kv/a/b/=c      key "a/b/c": a file; its value string is coord's header, then the value
    ROOT/kv/a/b         the directory of "a/b"'s children, never a key ("a/b" is ROOT/kv/a/=b)
    ROOT/leases/<n>     lease n: a file with the lease's ttl (n is its createdIndex)

How the Store maps (one request each unless said otherwise):

- ``revision`` is the key's modifiedIndex and ``created`` its createdIndex:
  etcd's cluster-wide index, so ``created`` strictly increases in creation
  order.
- ``get``/``exists``: GET of the key's file; ``list``: GET ``?recursive=true``
  of the prefix's directory; ``delete_tree``: DELETE ``?dir=true&recursive=true``
  of it. Reads are served from the member's own state (sequentially
  consistent); option ``quorum=true`` sends them through raft (linearizable,
  at a write's cost).
- ``put``: PUT ``?prevExist=true`` (an update keeps createdIndex, which a
  plain v2 set renews), then ``?prevExist=false`` if the key is absent: two
  requests for a new key. ``atomic_put``: ``?prevExist=false`` (create-only)
  or ``?prevIndex=`` (compare-and-swap); ``atomic_delete``: DELETE
  ``?prevIndex=``. ``put(ttl=)``: the file's own v2 ttl, in whole seconds
  rounded up; etcd's leader deletes expired files every 500 ms.
- ``transaction()``: one conditional write and reads around it;
  ``multi_key_transactions`` is False (``_txn``).
- Leases: a lease node per lease, renewed with one refresh however many
  keys it binds; a key bound to it names it in its header. A dead lease's
  keys are hidden from every reader at once and deleted by the Stores that
  know them (``_leases``, ``_liveness``, ``_expiry``).
- Watches: a long poll each, resumed from the index after the last event,
  re-synced (with deletes) past etcd's 1,000-event history (``_watches``).

Transient failures (connection refused or reset, timeouts, 5xx, etcd's raft
errors) are retried within ``timeout`` seconds, each retry on the next
endpoint that has not just failed, then raise ``StoreUnavailable``; a write
whose answer was lost recognises its own result by the nonce in its value.
A broken watch keeps trying for ``watch_retry`` seconds (by default the
larger of ``timeout`` and 30 s), then ends with ``StoreUnavailable``.

Options: ``root``, ``quorum``, ``watch_retry``, and for TLS ``tls_ca`` (a CA
file to verify the members with; the system's CAs by default), ``tls_cert``
and ``tls_key`` (a client certificate); a user and password in the URL are
sent with HTTP basic authentication (use TLS: basic auth is plain text), and
shown masked in every message.

Modules, one job each:

- ``_members``: urllib3's kept-alive connections to the members, TLS and
  basic authentication, and which member is in use;
- ``_boundary``: ``request`` and ``call``, the one place where HTTP's,
  urllib3's and etcd's errors become coord's;
- ``_layout``: paths, name escaping, the value header;
- ``_keys``: reads and writes of one key, each one conditional request, and
  how each recognises its own lost answer;
- ``_txn``: ``transaction()`` as one write with reads around it;
- ``_leases``: lease nodes, the keys each binds, and the deletion of leftovers;
- ``_liveness``: which leases are alive (the Store's own, and a mirror of
  ``ROOT/leases`` for the others');
- ``_expiry``: a watched key's lease deleted once expired, ahead of etcd's sweep;
- ``_watches``: long polls, resumed and re-synced;
- ``_store``: ``Etcd2Store``, wiring them to the Store's methods.
"""

from ._store import Etcd2Store

__all__ = ["Etcd2Store"]
