"""Clipping and stochastic-rounding quantization for integer (Paillier) packing.

A weighted value y in [-bound, bound] maps to u in [0, 2^bits - 1]; the sum of
``count`` such integers decodes exactly to the sum of the dequantized values.
Stochastic rounding makes each value's rounding error zero-mean and < one step.
"""

from __future__ import annotations

import numpy as np


def clip(values: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    """Clip to [-bound, bound]; also return how many values were clipped."""
    n_clipped = int(np.count_nonzero(np.abs(values) > bound))
    return np.clip(values, -bound, bound), n_clipped


def step(bound: float, bits: int) -> float:
    """Width of one quantization level."""
    return 2.0 * bound / (2**bits - 1)


def quantize(y: np.ndarray, *, bound: float, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Unsigned ``bits``-bit integers (uint64) for values in [-bound, bound]."""
    if bits < 1 or bits > 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")
    scaled = (np.asarray(y, dtype=np.float64) + bound) / step(bound, bits)
    low = np.floor(scaled)
    u = low + (rng.random(scaled.shape) < (scaled - low))
    return np.clip(u, 0, 2**bits - 1).astype(np.uint64)


def dequantize_sum(u_sum: np.ndarray, *, bound: float, bits: int, count: int) -> np.ndarray:
    """Sum of ``count`` dequantized values from the sum of their integers."""
    return np.asarray(u_sum, dtype=np.float64) * step(bound, bits) - count * bound


def error_bound(*, bound: float, bits: int, count: int, weight: float) -> float:
    """Worst-case per-coordinate error of a decrypted weighted mean.

    Each of ``count`` contributions is off by less than one step; the mean
    divides their sum by the total ``weight``.
    """
    return count * step(bound, bits) / weight


def headroom_bits(max_count: int) -> int:
    """Extra bits a slot needs so that summing ``max_count`` values cannot overflow."""
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    return int(max_count - 1).bit_length()
