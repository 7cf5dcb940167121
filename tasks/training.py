"""Framework-free PyTorch loops shared by every task: local training and prediction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainSettings:
    """Local-training hyperparameters sent by the server each round."""

    epochs: int
    batch_size: int
    lr: float
    proximal_mu: float = 0.0
    seed: int = 0


def proximal_term(model: nn.Module, global_params: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's mu/2 * ||w - w_global||^2 over trainable parameters.

    Squared norm, as in Li et al. (2020), so its gradient is mu * (w - w_global).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    sq = sum(((p - g) ** 2).sum() for p, g in zip(params, global_params, strict=True))
    return 0.5 * mu * sq


def train_epochs(
    model: nn.Module,
    data: Dataset,
    loss_fn: LossFn,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> float:
    """Run SGD for ``epochs`` over shuffled mini-batches; return the mean loss.

    The proximal term is added only when ``proximal_mu > 0`` (FedProx); the
    reported loss is the task loss without it.
    """
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    global_params = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            objective = loss
            if proximal_mu > 0:
                objective = loss + proximal_term(model, global_params, proximal_mu)
            objective.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
    return total / max(count, 1)


def fit(
    model: nn.Module, data: Dataset, loss_fn: LossFn, settings: TrainSettings
) -> dict[str, float]:
    """``train_epochs`` with a round's settings; returns the train metrics tasks report."""
    loss = train_epochs(
        model,
        data,
        loss_fn,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        proximal_mu=settings.proximal_mu,
        seed=settings.seed,
    )
    return {"train-loss": loss}


@torch.no_grad()
def predict(
    model: nn.Module, data: Dataset, loss_fn: LossFn, *, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray, float]:
    """Model outputs, true labels and mean loss over a dataset."""
    model.eval()
    outputs, labels, total = [], [], 0.0
    for x, y in DataLoader(data, batch_size=batch_size):
        out = model(x)
        total += loss_fn(out, y).item() * len(y)
        outputs.append(out.numpy())
        labels.append(y.numpy())
    n = sum(len(y) for y in labels)
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return np.concatenate(outputs), np.concatenate(labels), total / n
