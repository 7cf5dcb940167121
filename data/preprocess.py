"""Feature standardization fitted on training data only.

Clients report first and second moments of their own training split; the
server sums them into federated mean/std. Test statistics never enter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics for a mean and variance: count, sum, sum of squares."""

    count: int
    total: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> Moments:
        x = np.asarray(features, dtype=np.float64)
        return cls(count=len(x), total=x.sum(axis=0), total_sq=(x * x).sum(axis=0))

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.count + other.count,
            self.total + other.total,
            self.total_sq + other.total_sq,
        )

    def mean_std(self, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
        """Population mean and std; constant features get std 1 (no blow-up)."""
        if self.count <= 0:
            raise ValueError("cannot standardize from zero samples")
        mean = self.total / self.count
        var = np.maximum(self.total_sq / self.count - mean * mean, 0.0)
        std = np.sqrt(var)
        return mean, np.where(std < eps, 1.0, std)


def combine(moments: list[Moments]) -> Moments:
    """Sum the moments of several clients (order does not matter)."""
    if not moments:
        raise ValueError("no moments to combine")
    out = moments[0]
    for m in moments[1:]:
        out = out + m
    return out
