"""The recipes, built only on the Store contract, so each works unchanged on every backend."""

from .barrier import Barrier, DoubleBarrier
from .election import Election, Leadership
from .lock import Lock
from .registration import Instance, Registration, discover, register, registered_service, watch_service
from .semaphore import Semaphore

__all__ = [
    "Barrier",
    "DoubleBarrier",
    "Election",
    "Instance",
    "Leadership",
    "Lock",
    "Registration",
    "Semaphore",
    "discover",
    "register",
    "registered_service",
    "watch_service",
]
