"""Attack harness for robustness experiments: every malicious behaviour lives here.

``attack.type`` and ``attack.fraction`` (run config) pick the attack and how
many partitions are malicious; the choice is seeded by ``seed``, so the same
partitions misbehave in every run. The server tells those nodes with the
toolkit's ``Tampering`` layer; model-poisoning attacks change the plaintext
update in the toolkit's ``tamper_mod`` (innermost client mod: the HE mod then
encrypts the tampered update, as a real attacker's client would); label
flipping poisons the local training labels through ``poison``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Message
from torch.utils.data import Dataset, TensorDataset

from flwr_privacy.mods.tamper import UPDATE_ATTACKS, Tamper
from flwr_privacy.records import TAMPER_RECORD, settings_record
from tasks.base import ClientData

ATTACKS = ("none", "sign-flip", "scale", "gaussian", "label-flip", "same-value")
__all__ = ["ATTACKS", "UPDATE_ATTACKS", "Attack", "flip_labels", "malicious_partitions", "poison"]


@dataclass(frozen=True)
class Attack:
    """One run's attack: type, malicious fraction and the attack's strength.

    ``scale`` boosts the update (``scale``), ``noise_std`` is the standard
    deviation of the update that replaces the honest one (``gaussian``),
    ``value`` is the constant every coordinate of the update is set to
    (``same-value``).
    """

    type: str = "none"
    fraction: float = 0.0
    scale: float = 10.0
    noise_std: float = 1.0
    value: float = 10.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.type != "none" and self.fraction > 0

    def tamper(self) -> Tamper:
        """The toolkit's settings for the malicious nodes' ``tamper_mod``."""
        return Tamper(kind=self.type, scale=self.scale, noise_std=self.noise_std,
                      value=self.value, seed=self.seed)  # fmt: skip


def malicious_partitions(seed: int, fraction: float, num_partitions: int) -> frozenset[int]:
    """The partitions that misbehave: ``round(fraction * n)`` of them, chosen by ``seed``."""
    count = math.floor(fraction * num_partitions + 0.5)
    rng = np.random.default_rng([seed, 7919])
    return frozenset(int(p) for p in rng.choice(num_partitions, size=count, replace=False))


class FlippedLabels(Dataset):
    """A dataset whose label ``y`` reads as ``num_classes - 1 - y``."""

    def __init__(self, data: Dataset, num_classes: int) -> None:
        self.data, self.num_classes = data, num_classes

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data[i]
        return x, (self.num_classes - 1) - y


def poison(data: ClientData, num_classes: int, msg: Message) -> ClientData:
    """Flip the training labels of a node the server told to (``label-flip``); validation
    data stays honest."""
    record = settings_record(msg, TAMPER_RECORD)
    if record is None or record.get("kind") != "label-flip":
        return data
    return ClientData(train=flip_labels(data.train, num_classes), val=data.val)


def flip_labels(data: Dataset, num_classes: int) -> Dataset:
    """Labels ``y -> num_classes - 1 - y``; in-memory tensor datasets stay tensor datasets."""
    if isinstance(data, TensorDataset):
        x, y = data.tensors
        return TensorDataset(x, (num_classes - 1) - y)
    return FlippedLabels(data, num_classes)
