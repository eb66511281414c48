"""The Pareto front of (compression, accuracy) points and the statistics over seeds.

Pure functions, no MLflow: `compress.reporting.aggregate` feeds them the figures of logged runs.
A compressed model is worth showing when no other one is at least as small (or fast)
and at least as accurate, and strictly better on one of the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """`a` is at least as good as `b` on both axes and better on one (larger is better)."""
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each (x, y), whether no other point dominates it; larger is better on both.

    Equal points do not dominate each other, so ties and duplicates stay on the front
    together. A point with a NaN coordinate has no place on it and dominates nothing.
    """
    known = [point for point in points if not (math.isnan(point[0]) or math.isnan(point[1]))]
    return [
        not (math.isnan(point[0]) or math.isnan(point[1]))
        and not any(_dominates(other, point) for other in known)
        for point in points
    ]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std of a single seed is 0.

    A NaN among the values makes both NaN: a missing figure is not averaged away.
    """
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0 if not math.isnan(mean) else math.nan
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance)


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items sharing a key, in the order each key was first seen."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
