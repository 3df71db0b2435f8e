"""``consul://host:port`` (``consuls://`` for TLS): the Store on Consul, through py-consul.

- ``_store``: ``ConsulStore``, how each Store operation maps onto Consul's HTTP API.
- ``_boundary``: the py-consul client, ``send`` and ``call``: the one place HTTP and Consul errors become coord's.
- ``_layout``: where keys, log records and markers live under the ``root`` option; entries as KVPairs.
- ``_txn``: every write as one ``/v1/txn``: conditions first, locks for sessions, a log record per write.
- ``_sessions``: leases, ttl keys and log records as sessions; Consul's TTL window and minimum.
- ``_watches``: a blocking query per watch, the log for what happened between two answers.
"""

from ._store import ConsulStore

__all__ = ["ConsulStore"]
