"""``etcd://``: the Store on etcd's v3 API."""

from ._store import EtcdStore

__all__ = ["EtcdStore"]
