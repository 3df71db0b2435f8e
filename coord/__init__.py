"""coord: distributed coordination primitives over one Store API.

``coord.connect(url)`` opens a Store (etcd, ZooKeeper, Redis, an embedded
sqlite file, or memory); recipes built only on its primitives give leader
election, locks, semaphores, service registration and barriers on any of
them.
"""

from ._barrier import Barrier, DoubleBarrier
from ._clock import Clock, ManualClock, SystemClock
from ._connect import connect, default_store
from ._election import Election, Leadership
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
from ._lock import Lock
from ._registration import Instance, Registration, discover, register, registered_service, watch_service
from ._semaphore import Semaphore
from ._store import Store
from ._types import Event, KVPair
from ._watch import Watch

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
    "Store",
    "StoreClosed",
    "StoreUnavailable",
    "SystemClock",
    "Watch",
    "connect",
    "default_store",
    "discover",
    "register",
    "registered_service",
    "watch_service",
]

__version__ = "0.1.0"
