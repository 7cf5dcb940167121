"""Laplace-noised DP-SGD with a Polyak step size: the CNN-DP-GAN-Polyak paper's variant, made sound.

The paper trains with Laplace noise on the gradient, an increasing epsilon schedule and a
Polyak adaptive step size. As published it is not differentially private: the gradients are
not clipped, so their sensitivity is unbounded and no Laplace scale covers it, and the Polyak
step divides the *un-noised* batch loss by the gradient norm, which leaks the loss. This module
keeps the method and repairs the accounting.

Privacy argument (adjacency: replace one example; the local dataset size is public).

* Each example's gradient is clipped to L1 norm <= ``C`` (``l1_clip``), so replacing one
  example changes the clipped sum by at most ``2C`` in L1. Laplace noise of scale
  ``2C / eps_g`` per coordinate makes the noisy sum ``eps_g``-DP.
* Each example's loss is clamped to ``[0, loss_bound]``, so the clamped loss sum has
  sensitivity ``loss_bound``; Laplace noise of scale ``loss_bound / eps_l`` makes it
  ``eps_l``-DP. The Polyak step uses only this noisy loss and the noisy gradient.
* With ``eps_g + eps_l = eps_t`` one batch costs ``eps_t`` (basic composition).
* Each epoch draws a data-independent permutation and cuts it into disjoint batches of
  exactly ``batch_size`` (the remainder is dropped), so every example is in exactly one batch.
  Parallel composition over the disjoint batches (valid even though each batch's step depends
  on earlier outputs, because the partition is fixed by position) makes one epoch cost
  ``eps_t``.
* Across epochs basic composition applies, so the call costs ``sum(eps_t)``. No subsampling
  amplification is claimed: batches are a partition, not a Poisson sample.
* Weight decay and the FedProx term depend only on the current weights (already a function
  of released outputs) and the round's global weights: post-processing, free.

The paper schedules epsilon per *iteration*; here the unit of composition is the epoch (a
disjoint partition), so the increasing schedule (``epsilon_schedule``) is per epoch.

Caveats: the noise comes from a seeded PRNG (numpy ``Generator``) for reproducible research,
not a cryptographically secure source, and floating-point Laplace sampling has known
side-channel weaknesses (Mironov, 2012); neither matters for simulations, both would for a
deployment. Per-example gradients use ``torch.func`` (``vmap`` over single examples), so the
model must not mix examples (no BatchNorm in train mode); dropout draws from the global torch
RNG, so a model with dropout is reproducible only under a fixed ``torch.manual_seed``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from flwr_privacy.extras import requires

with requires("dp", "Laplace DP-SGD (flwr_privacy.dp.laplace)"):
    import torch
    from torch import nn
    from torch.func import functional_call, grad_and_value, vmap
    from torch.nn.utils import parameters_to_vector, vector_to_parameters
    from torch.utils.data import BatchSampler, DataLoader, Dataset

from flwr_privacy.dp.sgd import LossFn
from flwr_privacy.sizes import dataset_size

__all__ = ["LaplaceReport", "clip_l1", "epsilon_schedule", "train_laplace_sgd"]


@dataclass(frozen=True)
class LaplaceReport:
    """What one call of ``train_laplace_sgd`` spent and measured.

    Attributes
    ----------
    mean_loss
        Mean of the *privatized* batch losses (the noisy clamped means the Polyak step used),
        so this train metric is itself covered by the privacy guarantee; it is noisy and
        biased by clamping, useful only as a trend.
    epsilons
        The epsilon spent in each local epoch; the call's total is their sum.
    steps
        Number of noisy gradient steps taken.
    mean_lr
        Mean Polyak step size over the steps (post-processing of private values).
    """

    mean_loss: float
    epsilons: list[float]
    steps: int
    mean_lr: float


def epsilon_schedule(total_epsilon: float, increment: float, epochs: int) -> list[float]:
    """Split a budget into an increasing arithmetic schedule, one epsilon per epoch.

    ``eps_t = eps_1 + (t - 1) * increment`` for ``t = 1..epochs`` with ``eps_1`` chosen so
    the schedule sums to ``total_epsilon``. Later epochs get less noise because the model is
    closer to a minimum there, where small gradients are easily drowned (the paper's
    motivation); basic composition makes the sum the total cost.

    Parameters
    ----------
    total_epsilon
        Budget for all epochs together, > 0.
    increment
        Growth of epsilon from one epoch to the next, >= 0 (0 gives a flat schedule).
    epochs
        Number of epochs, >= 1.

    Returns
    -------
    list[float]
        ``epochs`` positive epsilons, increasing by ``increment``, summing to the total.

    Raises
    ------
    ValueError
        If an input is out of range, or ``increment`` is so large that ``eps_1 <= 0``.
    """
    if not (math.isfinite(total_epsilon) and total_epsilon > 0):
        raise ValueError(f"total_epsilon must be a finite number > 0, got {total_epsilon}")
    if not (math.isfinite(increment) and increment >= 0):
        raise ValueError(f"increment must be a finite number >= 0, got {increment}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    first = (total_epsilon - increment * epochs * (epochs - 1) / 2) / epochs
    if first <= 0:
        raise ValueError(
            f"increment={increment} is too large for total_epsilon={total_epsilon} over "
            f"epochs={epochs}: the first epoch's epsilon would be {first} <= 0"
        )
    return [first + t * increment for t in range(epochs)]


def clip_l1(per_example: torch.Tensor, bound: float) -> torch.Tensor:
    """Scale each row of a ``[B, D]`` matrix to L1 norm <= ``bound``.

    Row ``i`` becomes ``g_i * min(1, bound / ||g_i||_1)``: rows already inside the ball are
    returned unchanged, others are shrunk onto its surface. This bounds one example's
    contribution, which is what gives the summed gradient L1 sensitivity ``2 * bound``.
    """
    norms = per_example.abs().sum(dim=1, keepdim=True)
    scale = (bound / norms.clamp_min(torch.finfo(per_example.dtype).tiny)).clamp(max=1.0)
    return per_example * scale


def _validate(
    *,
    epochs: int,
    batch_size: int,
    size: int,
    epoch_epsilons: Sequence[float],
    l1_clip: float,
    loss_bound: float,
    loss_share: float,
    positive: dict[str, float],
    non_negative: dict[str, float],
) -> None:
    """Refuse settings under which the privacy claim or the step rule would not hold."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1 or size < batch_size:
        raise ValueError(f"batch_size={batch_size} must be in [1, len(data)={size}]")
    if len(epoch_epsilons) != epochs:
        raise ValueError(
            f"epoch_epsilons has {len(epoch_epsilons)} values, expected one per epoch ({epochs})"
        )
    bad = [e for e in epoch_epsilons if not (math.isfinite(e) and e > 0)]
    if bad:
        raise ValueError(f"epoch_epsilons must all be finite and > 0, got {list(epoch_epsilons)}")
    if not 0 < loss_share < 1:
        raise ValueError(f"loss_share must be in (0, 1), got {loss_share}")
    for name, value in {"l1_clip": l1_clip, "loss_bound": loss_bound, **positive}.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}")
    for name, value in non_negative.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def _epoch_batches(
    data: Dataset, batch_size: int, seed: np.random.SeedSequence
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Disjoint batches of exactly ``batch_size`` from a data-independent permutation.

    The permutation depends only on the seed, and ``drop_last`` keeps every batch the same
    public size, so each example is in at most one batch: the premise of parallel composition.
    """
    gen = torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))
    order = torch.randperm(dataset_size(data), generator=gen).tolist()
    sampler = BatchSampler(order, batch_size=batch_size, drop_last=True)
    yield from DataLoader(data, batch_sampler=sampler)


def _per_example(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example flattened gradients ``[B, D]`` and losses ``[B]`` of the trainable params.

    Example ``i``'s gradient is the gradient of ``loss_fn`` on that example alone (a batch of
    one), computed for all examples at once with ``torch.func.vmap``.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    fixed.update(dict(model.named_buffers()))

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, fixed), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    per_grad = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0), randomness="different")
    grads, losses = per_grad(params, x, y)
    flat = torch.cat([grads[n].reshape(len(x), -1) for n in names], dim=1)
    return flat, losses


def _laplace(rng: np.random.Generator, scale: float, like: torch.Tensor) -> torch.Tensor:
    """Laplace(0, ``scale``) noise shaped, typed and placed like ``like``."""
    noise = rng.laplace(0.0, scale, size=tuple(like.shape))
    return torch.as_tensor(noise, dtype=like.dtype, device=like.device)


def _epoch_seeds(
    seed: int, epochs: int
) -> list[tuple[np.random.SeedSequence, np.random.SeedSequence]]:
    """Independent (batch order, noise) seed streams for each epoch, derived from ``seed``."""
    streams = [np.random.SeedSequence([seed, t]).spawn(2) for t in range(epochs)]
    return [(batches, noise) for batches, noise in streams]


def train_laplace_sgd(
    model: nn.Module,
    data: Dataset,
    loss_fn: LossFn,
    *,
    epochs: int,
    batch_size: int,
    epoch_epsilons: Sequence[float],
    l1_clip: float,
    loss_bound: float,
    loss_share: float = 0.1,
    weight_decay: float = 1e-4,
    relaxation: float = 1e-3,
    max_lr: float = 1.0,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> LaplaceReport:
    """Train ``model`` in place with L1-clipped, Laplace-noised gradients and a Polyak step.

    Each step releases a noisy mean gradient and a noisy mean loss of one disjoint batch,
    then moves ``w -= eta * g`` with ``g`` = noisy gradient + ``weight_decay * w``
    (+ ``proximal_mu * (w - w_global)``) and ``eta = min(max_lr, f / (||g||^2 + relaxation))``
    (the Polyak step with optimum 0, which the non-negative losses used here attain as a lower
    bound). The module docstring gives the privacy argument: the call is
    ``sum(epoch_epsilons)``-DP for replace-one adjacency.

    Parameters
    ----------
    model, data, loss_fn
        The model (its trainable parameters are updated), a dataset of ``(x, y)`` pairs and
        a mean-reduced loss; the loss of one example is ``loss_fn`` on a batch of one.
    epochs, batch_size
        Local epochs and the fixed batch size (the remainder of each epoch is dropped).
    epoch_epsilons
        Epsilon of each epoch, e.g. from ``epsilon_schedule``.
    l1_clip
        L1 bound ``C`` of each example's gradient (all parameters flattened together).
    loss_bound
        Per-example losses are clamped to ``[0, loss_bound]`` before noising.
    loss_share
        Fraction of each epoch's epsilon spent on the loss (the rest goes to the gradient).
    weight_decay, relaxation, max_lr, proximal_mu
        L2 coefficient, Polyak denominator guard, step-size cap, FedProx coefficient.
    seed
        Seeds the batch permutations and the noise (>= 0).

    Returns
    -------
    LaplaceReport
        Privatized mean loss, epsilons spent, steps taken and mean step size.

    Raises
    ------
    ValueError
        If a setting is out of range, naming the parameter and value.
    """
    _validate(
        epochs=epochs,
        batch_size=batch_size,
        size=dataset_size(data),
        epoch_epsilons=epoch_epsilons,
        l1_clip=l1_clip,
        loss_bound=loss_bound,
        loss_share=loss_share,
        positive={"relaxation": relaxation, "max_lr": max_lr},
        non_negative={"weight_decay": weight_decay, "proximal_mu": proximal_mu, "seed": seed},
    )
    params = [p for p in model.parameters() if p.requires_grad]
    w_global = parameters_to_vector(params).detach().clone()
    device = w_global.device
    model.train()
    losses, rates = [], []
    for t, (batch_seed, noise_seed) in enumerate(_epoch_seeds(seed, epochs)):
        rng = np.random.default_rng(noise_seed)
        eps_g, eps_l = (1 - loss_share) * epoch_epsilons[t], loss_share * epoch_epsilons[t]
        for x, y in _epoch_batches(data, batch_size, batch_seed):
            grads, per_loss = _per_example(model, loss_fn, x.to(device), y.to(device))
            grad_sum = clip_l1(grads, l1_clip).sum(dim=0)
            g = (grad_sum + _laplace(rng, 2 * l1_clip / eps_g, grad_sum)) / batch_size
            loss_sum = per_loss.clamp(0.0, loss_bound).sum()
            f = max(float(loss_sum + _laplace(rng, loss_bound / eps_l, loss_sum)) / batch_size, 0.0)
            with torch.no_grad():
                w = parameters_to_vector(params)
                g = g + weight_decay * w + proximal_mu * (w - w_global)
                eta = min(max_lr, f / (float(g.square().sum()) + relaxation))
                vector_to_parameters(w - eta * g, params)
            losses.append(f)
            rates.append(eta)
    return LaplaceReport(
        mean_loss=float(np.mean(losses)),
        epsilons=[float(e) for e in epoch_epsilons],
        steps=len(rates),
        mean_lr=float(np.mean(rates)),
    )
