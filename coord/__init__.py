"""coord: distributed coordination primitives over one Store API.

``coord.connect(url)`` opens a Store (etcd, ZooKeeper, Redis, an embedded
sqlite file, or memory); recipes built only on its primitives give leader
election, locks, semaphores, service registration and barriers on any of
them.
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
from ._types import Event, KVPair
from ._watch import Watch

__all__ = [
    "Clock",
    "ConfigurationError",
    "CoordError",
    "Event",
    "InvalidKey",
    "KVPair",
    "KeyExists",
    "KeyModified",
    "KeyNotFound",
    "Lease",
    "LeaseExpired",
    "ManualClock",
    "NotSupported",
    "Store",
    "StoreClosed",
    "StoreUnavailable",
    "SystemClock",
    "Watch",
    "connect",
    "default_store",
]

__version__ = "0.1.0"
