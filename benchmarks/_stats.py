"""Percentiles (PyPI `hdrhistogram` when installed, else exact on a sorted list) and medians."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable

try:
    from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # exact percentiles are as good for the few thousand samples we take
    HdrHistogram = None

BACKEND = "hdrhistogram (3 significant digits)" if HdrHistogram else "exact sorted lists"


def percentile(values_ns: Iterable[int], q: float) -> float:
    """The `q`-quantile (0 to 1) of positive nanosecond values, in nanoseconds."""
    values = list(values_ns)
    if not values:
        return float("nan")
    if HdrHistogram is not None and min(values) > 0:
        histogram = HdrHistogram(1, 3_600_000_000_000, 3)
        for v in values:
            histogram.record_value(v)
        return float(histogram.get_value_at_percentile(q * 100))
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def median_interval(values: list[float], *, level: float = 0.95, draws: int = 10_000
                    ) -> tuple[float, float]:  # fmt: skip
    """A bootstrap interval of the median of `values` (resampled with replacement; seeded, so
    one set of values always gives the same interval)."""
    rng = random.Random(13)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    cut = int((1 - level) / 2 * draws)
    return medians[cut], medians[draws - 1 - cut]


def ms(ns: float) -> str:
    return f"{ns / 1e6:.3f} ms"


def krps(rps: float) -> str:
    return f"{rps / 1000:.1f}k"
