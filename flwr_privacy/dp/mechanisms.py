"""Local DP on a client's outgoing update: clip it, add noise, know the sensitivity.

The Gaussian version is Flower's ``LocalDpMod`` (used by ``flwr_privacy.mods.local_dp``); this
module has the Laplace version it lacks, and the parameter mapping that makes
Flower's mod add exactly the noise our accountant accounts for. Neighbouring
inputs are any two local datasets of the client: their clipped updates differ
by at most twice the clip norm, so the sensitivity is ``2 * clip``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def flower_epsilon(noise_multiplier: float, delta: float) -> float:
    """The ``epsilon`` to give Flower's ``LocalDpMod`` so its noise std is ``z * sensitivity``.

    Flower adds std ``sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon`` (the classic
    Gaussian mechanism, whose own epsilon claim holds only below 1); we pick the
    noise multiplier ``z`` and account for it with an RDP/PRV accountant instead.
    """
    return math.sqrt(2 * math.log(1.25 / delta)) / noise_multiplier


def laplace_update(
    update: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    l1_clip: float,
    epsilon: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``reference + clip_L1(update - reference) + Laplace(2 * l1_clip / epsilon)`` per coordinate.

    One release is ``epsilon``-DP for the client's whole dataset (L1 sensitivity
    ``2 * l1_clip``); rounds compose by adding their epsilons.
    """
    if l1_clip <= 0 or epsilon <= 0:
        raise ValueError(f"l1_clip = {l1_clip!r} and epsilon = {epsilon!r} must be > 0")
    deltas = {k: np.asarray(update[k], dtype=np.float64) - reference[k] for k in update}
    norm = sum(float(np.abs(d).sum()) for d in deltas.values())
    factor = min(1.0, l1_clip / norm) if norm > 0 else 1.0
    scale = 2 * l1_clip / epsilon
    return {
        k: (reference[k] + factor * d + rng.laplace(0.0, scale, size=d.shape)).astype(
            np.asarray(update[k]).dtype
        )
        for k, d in deltas.items()
    }
