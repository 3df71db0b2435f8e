"""``etcd://``: the Store on etcd's v3 API.

- ``_store``: ``EtcdStore``, how each Store operation maps onto etcd.
- ``_boundary``: the pyetcd client and ``call``, the one place gRPC's errors become coord's.
- ``_txn``: ``transaction()`` as one Txn, and a retry that recognises its own commit.
- ``_watches``: every watch of a Store on one stream per endpoint, resumed and re-synced.
- ``_expiry``: a watched key's lease, revoked once provably expired, ahead of etcd's sweep.
"""

from ._store import EtcdStore

__all__ = ["EtcdStore"]
