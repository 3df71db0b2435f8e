"""coord: distributed coordination primitives over one Store API.

``coord.connect(url)`` opens a Store (etcd's v3 or v2 API, ZooKeeper,
Redis, Consul, an embedded sqlite file, or memory); recipes built only on its primitives give leader
election, locks, semaphores, service registration and barriers on any of
them.

The layers, each importing only those above it::

    coord/_*.py       the contract: KVPair and Event, errors, keys, Clock,
                      Lease and its keeper, Watch and WatchFeed, Store,
                      URLs, the backend table (_registry), connect()
    coord/backends/   one module or package per backend (by URL scheme)
    coord/recipes/    Election, Lock, Semaphore, registration, barriers
    coord/testing/    FaultyStore, Scheduler, the conformance suite
    coord/__init__    this curated API
"""

from ._clock import Clock, ManualClock, SystemClock
from ._connect import connect, default_store
from ._errors import (
    ConfigurationError,
    CoordError,
    InvalidKey,
    KeyExists,
    KeyModified,
    KeyNotFound,
    LeaseExpired,
    NotSupported,
    StoreClosed,
    StoreUnavailable,
)
from ._lease import Lease
from ._store import Store
from ._txn import Transaction
from ._types import Event, KVPair, ServerTime
from ._watch import Watch
from .recipes import (
    Barrier,
    DoubleBarrier,
    Election,
    Instance,
    Leadership,
    Lock,
    Registration,
    Semaphore,
    discover,
    register,
    registered_service,
    watch_service,
)

__all__ = [
    "Barrier",
    "Clock",
    "ConfigurationError",
    "CoordError",
    "DoubleBarrier",
    "Election",
    "Event",
    "Instance",
    "InvalidKey",
    "KVPair",
    "KeyExists",
    "KeyModified",
    "KeyNotFound",
    "Leadership",
    "Lease",
    "LeaseExpired",
    "Lock",
    "ManualClock",
    "NotSupported",
    "Registration",
    "Semaphore",
    "ServerTime",
    "Store",
    "StoreClosed",
    "StoreUnavailable",
    "SystemClock",
    "Transaction",
    "Watch",
    "connect",
    "default_store",
    "discover",
    "register",
    "registered_service",
    "watch_service",
]

__version__ = "0.1.0"
