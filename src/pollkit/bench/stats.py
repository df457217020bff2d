"""Medians and spreads of benchmark rounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["Spread", "percentile", "summarize"]


@dataclass(frozen=True)
class Spread:
    """The median of a set of rounds and how widely the rounds scattered."""

    median: float
    p25: float
    p75: float
    min: float
    max: float
    n: int

    @property
    def relative_iqr(self) -> float:
        """``(p75 - p25) / median``: 0.02 means the middle half of rounds lay within 2 %."""
        if self.median == 0:
            return math.inf if self.p75 > self.p25 else 0.0
        return (self.p75 - self.p25) / abs(self.median)

    def as_dict(self) -> dict[str, float]:
        data: dict[str, float] = asdict(self)
        data["relative_iqr"] = self.relative_iqr
        return data


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of already sorted values, interpolated linearly.

    Raises ``ValueError`` for an empty sequence or a fraction outside 0..1.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, not {fraction!r}")
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    weight = position - low
    return sorted_values[low] * (1.0 - weight) + sorted_values[high] * weight


def summarize(values: Sequence[float]) -> Spread:
    """Median, quartiles and extremes of ``values``; raises ``ValueError`` if empty."""
    ordered = sorted(values)
    return Spread(
        median=percentile(ordered, 0.5),
        p25=percentile(ordered, 0.25),
        p75=percentile(ordered, 0.75),
        min=ordered[0],
        max=ordered[-1],
        n=len(ordered),
    )
