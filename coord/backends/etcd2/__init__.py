"""``etcd2://host:port[,host:port...]`` (``etcd2s://`` for TLS): the Store on etcd's v2 HTTP API.

(Filled in below.)
"""

from ._store import Etcd2Store

__all__ = ["Etcd2Store"]
