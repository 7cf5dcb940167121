"""Tabular tasks: arrays in memory, inputs standardized with federated moments."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from data.partition import PartitionSpec
from data.preprocess import Moments
from tasks.base import ClientData, Task


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


def to_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))


class TabularTask(Task):
    """A task whose model starts with a ``standardize`` module.

    Standardization statistics come from the clients' training splits only
    (their moments summed by the server), never from validation or test data.
    """

    @abstractmethod
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw (x_train, y_train, x_test, y_test)."""

    @cached_property
    def _splits(self) -> dict[tuple[int, int, PartitionSpec], tuple[np.ndarray, np.ndarray]]:
        return {}

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.load_arrays()

    def num_train_samples(self) -> int:
        return len(self._arrays[1])

    def load_partition(
        self, partition_id: int, num_partitions: int, spec: PartitionSpec
    ) -> ClientData:
        x, y = self._arrays[0], self._arrays[1]
        # Partitioning 125k NSL-KDD records takes seconds; a client process asks every round.
        key = (partition_id, num_partitions, spec)
        if key not in self._splits:
            self._splits[key] = spec.client_split(y, partition_id, num_partitions)
        train_idx, val_idx = self._splits[key]
        return ClientData(
            train=to_dataset(x[train_idx], y[train_idx]),
            val=to_dataset(x[val_idx], y[val_idx]),
        )

    def load_test(self) -> Dataset:
        return to_dataset(self._arrays[2], self._arrays[3])

    @staticmethod
    def feature_moments(data: TensorDataset) -> Moments:
        """Moments of a local training set's raw features."""
        return Moments.of(data.tensors[0].numpy())

    @staticmethod
    def set_standardization(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        """Install federated mean/std into the model's ``standardize`` module."""
        model.standardize.set(np.asarray(mean), np.asarray(std))
