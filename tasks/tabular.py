"""Tabular tasks: arrays in memory, inputs standardized with federated moments."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from data.preprocess import Moments
from tasks.arrays import ArrayTask


class Standardize(nn.Module):
    """(x - mean) / std with fixed statistics.

    The buffers are not part of the state dict: only trainable weights are
    aggregated (and encrypted); the statistics travel in the message config.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features), persistent=False)
        self.register_buffer("std", torch.ones(num_features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def set(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))


class TabularTask(ArrayTask):
    """An array task whose model starts with a ``standardize`` module.

    Standardization statistics come from the clients' training splits only
    (their moments summed by the server), never from validation or test data.
    """

    @staticmethod
    def feature_moments(data: TensorDataset) -> Moments:
        """Moments of a local training set's raw features."""
        return Moments.of(data.tensors[0].numpy())

    @staticmethod
    def set_standardization(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        """Install federated mean/std into the model's ``standardize`` module."""
        model.standardize.set(np.asarray(mean), np.asarray(std))
