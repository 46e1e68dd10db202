"""Statistics for expert scores: means with 95% intervals and inter-rater agreement.

Plain Python (scipy only for the t quantile), so reading a sheet back needs no torch.

- `mean_interval(values)`: mean and a t interval (the items are the sample).
- `wilson_interval(k, n)`: a proportion's Wilson score interval (stays inside [0, 1] and behaves at
  0 or n successes, unlike the normal approximation).
- `krippendorff_alpha(units, metric)`: agreement beyond chance for any number of raters, with items
  that not every rater scored; `interval` for the 1-5 scale, `nominal` for y/n. 1 is perfect
  agreement, 0 is chance level.
"""

from __future__ import annotations

import math
from itertools import combinations

Z95 = 1.959963984540054


def _t95(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_interval(values: list[float]) -> dict:
    """`{"mean", "ci95": [low, high], "n"}`; the interval is None below two values."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _t95(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def wilson_interval(k: int, n: int) -> dict:
    """`{"rate", "ci95": [low, high], "n"}` for k successes out of n."""
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return {"rate": p, "ci95": [max(0.0, centre - half), min(1.0, centre + half)], "n": n}


def proportion_interval(item_values: list[list[float]]) -> dict:
    """A y/n rate over items: Wilson when each item has one rating; with several raters the
    item means are averaged and a t interval (clipped to [0, 1]) keeps items, not ratings, as the
    sample, since two raters of one item are not independent draws."""
    if all(len(v) == 1 for v in item_values):
        return wilson_interval(int(sum(v[0] for v in item_values)), len(item_values))
    result = mean_interval([sum(v) / len(v) for v in item_values])
    result["rate"] = result.pop("mean")
    if result["ci95"]:
        result["ci95"] = [max(0.0, result["ci95"][0]), min(1.0, result["ci95"][1])]
    return result


def krippendorff_alpha(units: list[list[float]], metric: str) -> float | None:
    """Krippendorff's alpha over items (`units`: each item's values from its raters).

    Items with a single value are not pairable and are left out. None when fewer than two
    pairable items remain or every value is the same (expected disagreement 0: alpha undefined).
    """
    def delta(a: float, b: float) -> float:
        return (a - b) ** 2 if metric == "interval" else float(a != b)

    units = [u for u in units if len(u) >= 2]
    values = [v for u in units for v in u]
    n = len(values)
    if len(units) < 2 or n < 3:
        return None
    observed = sum(2 * sum(delta(a, b) for a, b in combinations(u, 2)) / (len(u) - 1) for u in units) / n
    expected = 2 * sum(delta(a, b) for a, b in combinations(values, 2)) / (n * (n - 1))
    return None if expected == 0 else 1 - observed / expected


def pairwise_agreement(units: list[list[float]], tolerance: float = 0.0) -> float | None:
    """Share of rater pairs on the same item whose values differ by at most `tolerance`."""
    pairs = [abs(a - b) <= tolerance for u in units for a, b in combinations(u, 2)]
    return sum(pairs) / len(pairs) if pairs else None
