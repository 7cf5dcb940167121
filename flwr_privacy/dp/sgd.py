"""Sample-level DP-SGD with Opacus: per-example L2 clipping, Poisson sampling, Gaussian noise.

The task supplies its model, local data and per-example loss; this module
trains them privately and returns the release to put in the privacy ledger.
The sample rate and step count are Opacus' own (``1 / len(loader)`` and
``len(loader)`` steps per epoch), so the ledger accounts exactly what ran.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from flwr_privacy.extras import requires

with requires("dp", "DP-SGD (flwr_privacy.dp.sgd)"):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

from flwr_privacy.dp.ledger import GaussianStep, quiet_opacus
from flwr_privacy.dp.settings import GRAD_SAMPLE_MODES

__all__ = ["DpSgd", "LossFn", "dp_sgd_steps", "planned_noise", "sampling", "train_dp_sgd"]

# A loss over (logits, labels): the user's own, e.g. nn.functional.cross_entropy.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sampling(num_examples: int, batch_size: int) -> tuple[float, int]:
    """Opacus' Poisson sample rate and steps per epoch for a local dataset."""
    if num_examples < 1:
        raise ValueError("DP-SGD needs at least one training example")
    steps = math.ceil(num_examples / batch_size)
    return 1.0 / steps, steps


def planned_noise(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """The smallest noise multiplier whose epsilon over ``steps`` stays within the target."""
    with requires("dp", "DP-SGD (flwr_privacy.dp.sgd)"):
        from opacus.accountants.utils import get_noise_multiplier  # heavy: only when planning

    quiet_opacus()

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
            epsilon_tolerance=0.005,
        )
    )


@dataclass(frozen=True, kw_only=True)
class DpSgd:
    """One client's DP-SGD settings for a round (keyword-only, as Opacus')."""

    noise_multiplier: float
    max_grad_norm: float
    grad_sample_mode: str = "hooks"

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:  # 0: clip only, the noise is added later (DDG in SecAgg)
            raise ValueError(f"noise multiplier {self.noise_multiplier!r} must be >= 0")
        if self.max_grad_norm <= 0:
            raise ValueError(f"max grad norm {self.max_grad_norm!r} must be > 0")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad sample mode {self.grad_sample_mode!r}: {GRAD_SAMPLE_MODES}")


def train_dp_sgd(
    model: nn.Module,
    data: Dataset,
    loss_fn: LossFn,
    dp: DpSgd,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    proximal_mu: float = 0.0,
    seed: int = 0,
    max_steps: int | None = None,
) -> tuple[float, GaussianStep]:
    """Train ``model`` in place with DP-SGD (plain SGD); return the mean loss and the release.

    FedProx's proximal pull is applied after each noisy step: it does not touch
    the data, so it is post-processing and costs no privacy. ``max_steps``
    stops early (distributed DP takes one step a round). Gradients are
    divided by ``batch_size`` itself (not Opacus' per-client estimate
    ``q * n``), so every client's clipped sum and noise share sit on the same
    scale and an unweighted sum of clients' steps is one DP-SGD step.
    """
    loader = DataLoader(data, batch_size=batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    after_step = None
    if proximal_mu > 0:
        anchor = [p.detach().clone() for p in model.parameters()]
        after_step = partial(_proximal_step, model, anchor, lr * proximal_mu)

    return dp_sgd_steps(
        model, loader, optimizer, loss_fn, dp, epochs=epochs, seed=seed, max_steps=max_steps,
        expected_batch_size=batch_size, after_step=after_step,
    )  # fmt: skip


def dp_sgd_steps(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    dp: DpSgd,
    *,
    epochs: int,
    seed: int,
    max_steps: int | None = None,
    expected_batch_size: int | None = None,
    after_step: Callable[[], None] | None = None,
) -> tuple[float, GaussianStep]:
    """Opacus DP-SGD with any model, optimizer and loader; return the mean loss and the release.

    Opacus Poisson-samples batches of expected size ``loader.batch_size`` (sample rate
    ``1 / len(loader)``, ``len(loader)`` steps an epoch). Both the sampling and the
    noise are drawn from ``seed``, which must be secret for the guarantee to hold.
    ``expected_batch_size`` overrides Opacus' ``q * n`` as the gradient divisor.
    """
    with requires("dp", "DP-SGD (flwr_privacy.dp.sgd)"):
        from opacus import PrivacyEngine  # heavy: only when training privately

    quiet_opacus()

    loader = _reseeded(loader, seed)
    q = 1.0 / len(loader)
    with warnings.catch_warnings():  # secure_mode off: seeded noise (the seed is secret)
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        hooks, dp_optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True, noise_generator=torch.Generator().manual_seed(seed + 1),
            grad_sample_mode=dp.grad_sample_mode, wrap_model=False,
        )  # fmt: skip
    if expected_batch_size is not None:
        dp_optimizer.expected_batch_size = expected_batch_size
    device = next(model.parameters()).device
    model.train()
    total, count, taken = 0.0, 0, 0
    try:
        with warnings.catch_warnings():
            # Opacus' hooks fire on the first layer although inputs need no gradient: harmless.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for x, y in (b for _ in range(epochs) for b in loader):
                if max_steps is not None and taken >= max_steps:
                    break
                taken += 1
                dp_optimizer.zero_grad()
                # An empty Poisson batch still takes its noisy step (Opacus adds the noise to
                # zero gradients): skipping it would reveal that no example was sampled.
                loss = loss_fn(model(x.to(device)), y.to(device))
                loss.backward()
                dp_optimizer.step()
                if after_step is not None:
                    after_step()
                if len(y):
                    total += loss.item() * len(y)
                    count += len(y)
    finally:
        hooks.cleanup()
    return total / max(count, 1), (dp.noise_multiplier, q, taken)


def _reseeded(loader: DataLoader, seed: int) -> DataLoader:
    """The loader's data and batching, shuffled by ``seed`` (Opacus samples with its generator).

    A new loader, so the caller's own is left as it was.
    """
    if loader.batch_size is None:
        raise ValueError(
            "DP-SGD needs a DataLoader made with batch_size=<int> (Opacus Poisson-samples "
            "batches of that expected size); this one has a custom batch_sampler"
        )
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, drop_last=loader.drop_last,
        collate_fn=loader.collate_fn, num_workers=loader.num_workers,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


@torch.no_grad()
def _proximal_step(model: nn.Module, anchor: list[torch.Tensor], rate: float) -> None:
    for p, a in zip(model.parameters(), anchor, strict=True):
        p.sub_(rate * (p - a))
