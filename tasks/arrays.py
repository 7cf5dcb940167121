"""Tasks whose data fit in memory as arrays: partitions are index sets into them."""

from __future__ import annotations

from abc import abstractmethod
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from data.partition import PartitionSpec
from tasks.base import ClientData, Task


class ArrayTask(Task):
    """A task defined by (x_train, y_train, x_test, y_test) arrays, loaded once per process."""

    @abstractmethod
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw (x_train, y_train, x_test, y_test)."""

    def to_dataset(self, x: np.ndarray, y: np.ndarray) -> TensorDataset:
        """Model-ready tensors of raw records (float32 as they are; image tasks rescale)."""
        return TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))

    @cached_property
    def _splits(self) -> dict[tuple[int, int, PartitionSpec], tuple[np.ndarray, np.ndarray]]:
        return {}

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.load_arrays()

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes ``0 .. num_classes-1`` (their indices unless a task names them)."""
        return tuple(str(i) for i in range(self.num_classes))

    def describe(self) -> dict[str, Any]:
        x, y, xt, yt = self._arrays
        train, test = (np.bincount(np.asarray(v, np.int64).ravel(), minlength=self.num_classes)
                       for v in (y, yt))  # fmt: skip
        return {
            "rows": {"train": len(y), "test": len(yt)},
            "features": int(np.prod(x.shape[1:])),
            "classes": {
                name: {"train": int(a), "test": int(b)}
                for name, a, b in zip(self.class_names, train, test, strict=False)
            },
        }

    def num_train_samples(self) -> int:
        return len(self._arrays[1])

    def load_partition(
        self, partition_id: int, num_partitions: int, spec: PartitionSpec
    ) -> ClientData:
        x, y = self._arrays[0], self._arrays[1]
        # Partitioning 125k records takes seconds, and a client process asks every round.
        key = (partition_id, num_partitions, spec)
        if key not in self._splits:
            self._splits[key] = spec.client_split(y, partition_id, num_partitions)
        train_idx, val_idx = self._splits[key]
        return ClientData(
            train=self.to_dataset(x[train_idx], y[train_idx]),
            val=self.to_dataset(x[val_idx], y[val_idx]),
        )

    def load_test(self) -> Dataset:
        return self.to_dataset(self._arrays[2], self._arrays[3])
