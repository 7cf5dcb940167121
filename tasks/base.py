"""The small surface every task offers to the apps: model, data, train, evaluate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn
from torch.utils.data import Dataset

from data.partition import PartitionSpec
from tasks.training import LossFn, TrainSettings, fit


def option(cfg: Mapping[str, Any], key: str, default: Any, allowed: tuple[str, ...] = ()) -> Any:
    """A task's run-config value ``key`` (its default if absent), type- and choice-checked."""
    value = cfg.get(key, default)
    if not isinstance(value, type(default)) or (allowed and value not in allowed):
        raise ValueError(
            f"run-config key '{key}' = {value!r} is invalid; allowed: "
            + (" | ".join(allowed) if allowed else type(default).__name__)
        )
    return value


@dataclass(frozen=True)
class ClientData:
    """One client's local data: what it trains on and what it validates on."""

    train: Dataset
    val: Dataset


class Task(ABC):
    """A learning problem: knows nothing about Flower, HE or DP.

    ``metric_names`` are the metrics ``evaluate`` always returns (clients report
    these); ``evaluate`` may add more when they are defined (e.g. ROC-AUC needs
    both classes). ``num_classes`` counts the label values ``0 .. num_classes-1``.
    """

    name: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]
    num_classes: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Task:
        """An instance configured by the task's run-config sub-table (``<name>.*`` keys).

        Raises ``ValueError`` naming the key for a bad value; must not load data.
        """
        return cls()

    @abstractmethod
    def build_model(self) -> nn.Module: ...

    @abstractmethod
    def num_train_samples(self) -> int: ...

    @abstractmethod
    def load_partition(
        self, partition_id: int, num_partitions: int, spec: PartitionSpec
    ) -> ClientData: ...

    @abstractmethod
    def load_test(self) -> Dataset: ...

    @abstractmethod
    def loss_fn(self, data: Dataset) -> LossFn:
        """The training loss for local data ``data`` (mean over the batch).

        DP-SGD clips per example, so the loss of one example must not depend on
        the others in its batch.
        """

    def train(self, model: nn.Module, data: Dataset, settings: TrainSettings) -> dict[str, float]:
        """Plain local SGD; the DP layer (``flwr_privacy.dp``) trains with ``loss_fn`` instead."""
        return fit(model, data, self.loss_fn(data), settings)

    def describe(self) -> dict[str, Any]:
        """The data as loaded (rows, features, classes with counts) for logs and results.json.

        Only counts and encoding choices, never record values; the server logs it
        and records it as ``dataset``.
        """
        return {}

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Dataset) -> dict[str, Any]:
        """Metrics by name: floats, and lists of numbers where a metric is a table."""
