"""The statistics of study tables: a metric's mean over seeds with its Student-t interval, Welch's interval of
the difference of two rows, and the t-interval of per-seed (paired) differences."""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """One metric over a row's runs: mean of the finite values, sample std and 95% t-interval half-width
    (None below 2 values); `n` counts the finite values."""

    n: int
    mean: float
    std: float
    half_width: Optional[float]

    @property
    def interval(self) -> Optional[Tuple[float, float]]:
        if self.half_width is None:
            return None
        return (self.mean - self.half_width, self.mean + self.half_width)


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean and Student-t interval of the finite `values` (NaN: no ground truth, left out)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return Summary(0, math.nan, math.nan, None)
    mean = sum(finite) / n
    if n == 1:
        return Summary(1, mean, math.nan, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, half_width)


def difference_interval(
    a: Summary, b: Summary, confidence: float = CONFIDENCE
) -> Optional[Tuple[float, float]]:
    """Welch's interval for mean(a) - mean(b); None unless both have at least 2 values."""
    if a.n < 2 or b.n < 2:
        return None
    difference = a.mean - b.mean
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    if va + vb == 0:
        return (difference, difference)
    dof = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(va + vb)
    return (difference - half_width, difference + half_width)


def paired_difference(
    a: Dict[int, float], b: Dict[int, float], confidence: float = CONFIDENCE
) -> Tuple[Summary, List[int]]:
    """Mean and t-interval of a[seed] - b[seed] over the seeds both have finite values for, and those seeds."""
    seeds = [seed for seed in a if seed in b and math.isfinite(a[seed]) and math.isfinite(b[seed])]
    return summarize([a[seed] - b[seed] for seed in seeds], confidence), seeds
