"""Summaries of samples: median, p99 and spread, the same way in every benchmark."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["percentile", "rounded", "spread", "summary"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), by linear interpolation between the closest ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(samples: Sequence[float]) -> float:
    """The interquartile range relative to the median: how noisy repeated measurements were."""
    if len(samples) < 2:
        return 0.0
    middle = statistics.median(samples)
    return (percentile(samples, 75) - percentile(samples, 25)) / middle if middle else math.nan


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """``n``, ``median``, ``p99``, ``mean``, ``min``, ``max`` and ``spread`` of ``samples``."""
    if not samples:
        return {"n": 0, "median": None, "p99": None, "mean": None, "min": None, "max": None, "spread": None}
    return {
        "n": len(samples),
        "median": rounded(statistics.median(samples)),
        "p99": rounded(percentile(samples, 99)),
        "mean": rounded(statistics.fmean(samples)),
        "min": rounded(min(samples)),
        "max": rounded(max(samples)),
        "spread": rounded(spread(samples)),
    }


def rounded(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits, for JSON that people read."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))))
