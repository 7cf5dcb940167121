"""Client side of server-keyed HE: train on the encrypted global model without reading it.

The task trains as always, on plaintext weights, but never on the real model:
local SGD on a loss that is quadratic in the weights (the Taylor-approximated
logistic loss, ``breast-cancer.loss = "taylor"``; FedProx's proximal term is
quadratic too) is an affine map ``w -> M w + c`` of the weights it starts
from. Running the task's own training from ``0`` and from each unit vector
``e_j`` (same data, batches and seed) gives ``c`` and the columns of ``M``;
one more run from a random start checks the map really is affine, so a
non-quadratic loss is refused instead of silently mis-trained. The map is
then applied to the ciphertext (``flwr_privacy.he.model``): d + 2 cheap plaintext
trainings of a 31-weight model buy a single ciphertext multiplication.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch import nn

from flwr_privacy.he import Payload
from flwr_privacy.he.codec import flatten, unflatten
from flwr_privacy.he.model import apply_affine
from flwr_privacy.he.payload import Layout

AFFINE_TOLERANCE = 1e-3  # relative; float32 training is exact to about 1e-6 here

TrainFn = Callable[[nn.Module], object]


class NotAffineError(ValueError):
    """Local training is not an affine map of the starting weights (loss not quadratic)."""


def _run(model: nn.Module, train: TrainFn, start: np.ndarray, layout: Layout) -> np.ndarray:
    state = {k: torch.as_tensor(v) for k, v in unflatten(start, layout).items()}
    model.load_state_dict(state, strict=False)
    train(model)
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items() if k in state}
    return flatten({k: arrays[k] for k in layout.names})[1]


def local_affine_map(
    model: nn.Module, train: TrainFn, layout: Layout, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """``M``, ``c`` with ``train(w) = M w + c``, and the relative error of a random check.

    ``train`` must be deterministic (same batches each call): the task's
    training with a fixed seed is.
    """
    d = layout.size
    c = _run(model, train, np.zeros(d), layout)
    matrix = np.empty((d, d))
    for j in range(d):
        matrix[:, j] = _run(model, train, np.eye(d)[j], layout) - c
    probe = np.random.default_rng(seed).normal(size=d)
    got = _run(model, train, probe, layout)
    error = float(
        np.linalg.norm(got - (matrix @ probe + c)) / max(float(np.linalg.norm(got)), 1e-12)
    )
    if error > AFFINE_TOLERANCE:
        raise NotAffineError(
            f"local training is not affine in the model weights (relative error {error:.2g}); "
            "server-keyed HE needs a quadratic loss, e.g. breast-cancer.loss = 'taylor'"
        )
    return matrix, c, error


def train_encrypted(
    model: nn.Module, train: TrainFn, encrypted: ArrayRecord, *, seed: int = 0
) -> tuple[ArrayRecord, dict[str, float]]:
    """[[w']] for the encrypted global model [[w]], and the client's HE metrics."""
    payload = Payload.from_arrays(encrypted)
    start = time.perf_counter()
    matrix, offset, error = local_affine_map(model, train, payload.header.layout, seed=seed)
    mapped = time.perf_counter()
    out = apply_affine(payload, matrix, offset)
    done = time.perf_counter()
    metrics = {"he-map-s": mapped - start, "he-apply-s": done - mapped, "he-affine-error": error}
    return out.to_arrays(), metrics
