"""Integers mod R = 2^bits for SecAgg+: fixed-point updates, packing, range checks.

An update ``delta`` (the client's model minus the global model) is scaled by
its FedAvg weight ``w`` in [0, 1], clipped to ``[-clip, clip]`` and rounded
stochastically to ``quant_bits``-bit integers; one more coordinate carries the
weight itself (``round(w * (2^quant_bits - 1))``). The modulus leaves room for
``max_count`` such vectors, so the unmasked sum is the exact integer sum and
``sum(w_i delta_i) / sum(w_i)`` is plaintext FedAvg up to one quantization step
per client. Masked vectors travel packed in ``ceil(mod_bits / 8)`` bytes a value
(3 bytes for 16-bit quantization and up to 256 clients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flwr_privacy.secagg.crypto import SecAggError


def modulus_bits(quant_bits: int, max_count: int) -> int:
    """Bits of R so that ``max_count`` values below 2^quant_bits sum without wrapping."""
    return quant_bits + max(math.ceil(math.log2(max(max_count, 1))), 0)


@dataclass(frozen=True)
class FixedPoint:
    """Stochastic fixed-point quantization of weighted updates (the non-DP encoding)."""

    clip: float
    quant_bits: int

    @property
    def levels(self) -> int:
        return (1 << self.quant_bits) - 1

    @property
    def step(self) -> float:
        """Width of one quantization step: each client's error per value is below it."""
        return 2 * self.clip / self.levels

    def weight(self, w: float) -> tuple[int, float]:
        """The weight coordinate and the weight it stands for exactly."""
        q = int(round(min(max(w, 0.0), 1.0) * self.levels))
        return q, q / self.levels

    def encode(
        self, delta: np.ndarray, w: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, int]:
        """Integers below 2^quant_bits for ``w * delta`` plus the weight; and the clipped count."""
        qw, w_exact = self.weight(w)
        scaled = w_exact * np.asarray(delta, dtype=np.float64)
        clipped = int(np.count_nonzero(np.abs(scaled) > self.clip))
        x = (np.clip(scaled, -self.clip, self.clip) + self.clip) / self.step
        low = np.floor(x)
        q = low + (rng.random(x.shape) < (x - low))
        out = np.empty(x.size + 1, dtype=np.uint32)
        out[:-1] = np.minimum(q, self.levels).astype(np.uint32)
        out[-1] = qw
        return out, clipped

    def decode(self, total: np.ndarray, count: int) -> tuple[np.ndarray, float]:
        """``(sum(w_i delta_i) / sum(w_i), sum(w_i))`` from the integer sum of ``count`` vectors."""
        weights = float(total[-1]) / self.levels
        if weights <= 0:
            raise SecAggError("the unmasked weights sum to 0: no client contributed weight")
        values = total[:-1].astype(np.float64) * self.step - self.clip * count
        return values / weights, weights


def value_bytes(mod_bits: int) -> int:
    return (mod_bits + 7) // 8


def pack(values: np.ndarray, mod_bits: int) -> bytes:
    """Little-endian values in ``ceil(mod_bits / 8)`` bytes each."""
    width = value_bytes(mod_bits)
    raw = np.ascontiguousarray(values, dtype="<u4").view(np.uint8).reshape(-1, 4)
    return raw[:, :width].tobytes()


def unpack(data: bytes, mod_bits: int, size: int, node: int) -> np.ndarray:
    """The values ``pack`` wrote; SecAggError naming ``node`` for a wrong length or range."""
    width = value_bytes(mod_bits)
    if len(data) != width * size:
        raise SecAggError(
            f"node {node}: masked vector has {len(data)} bytes, expected {width * size} "
            f"({size} values of {width} bytes)"
        )
    raw = np.zeros((size, 4), dtype=np.uint8)
    raw[:, :width] = np.frombuffer(data, dtype=np.uint8).reshape(size, width)
    values = raw.view("<u4").reshape(size).astype(np.uint32)
    if mod_bits < 32 and int(values.max(initial=0)) >= (1 << mod_bits):
        raise SecAggError(f"node {node}: masked vector has values outside [0, 2^{mod_bits})")
    return values
