"""Attack harness for robustness experiments: every malicious behaviour lives here.

``attack.type`` and ``attack.fraction`` (run config) pick the attack and how
many partitions are malicious; the choice is seeded by ``seed``, so the same
partitions misbehave in every run. The server tells those nodes with the
toolkit's ``Tampering`` layer; model-poisoning attacks change the plaintext
update in the toolkit's ``tamper_mod`` (innermost client mod: the HE mod then
encrypts the tampered update, as a real attacker's client would); label
flipping poisons the local training labels through ``poison``: ``label-flip``
maps every label ``y -> num_classes - 1 - y``; ``label-flip-target`` is the
sybil attack of FoolsGold's paper: each malicious client trains on its samples
of one source class only, relabelled as one target class (``attack.source-class``
-> ``attack.target-class``, 1 -> 0 by default: malignant read as benign in
breast cancer, "A system attack" as benign in the threat task), so every sybil
pushes the same poisoned direction (the paper's sybils hold "1s labelled as 7s").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Message
from torch.utils.data import Dataset, Subset, TensorDataset

from flwr_privacy.mods.tamper import UPDATE_ATTACKS, Tamper
from flwr_privacy.records import TAMPER_RECORD, settings_record
from flwr_privacy.sizes import dataset_size
from tasks.base import ClientData

ATTACKS = ("none", "sign-flip", "scale", "gaussian", "label-flip", "same-value",
           "label-flip-target")  # fmt: skip
__all__ = ["ATTACKS", "UPDATE_ATTACKS", "Attack", "flip_labels", "flip_target",
           "malicious_partitions", "poison", "poisoned_subset"]  # fmt: skip


@dataclass(frozen=True)
class Attack:
    """One run's attack: type, malicious fraction and the attack's strength.

    ``scale`` boosts the update (``scale``), ``noise_std`` is the standard
    deviation of the update that replaces the honest one (``gaussian``),
    ``value`` is the constant every coordinate of the update is set to
    (``same-value``); ``label-flip-target`` relabels ``source_class`` as
    ``target_class``.
    """

    type: str = "none"
    fraction: float = 0.0
    scale: float = 10.0
    noise_std: float = 1.0
    value: float = 10.0
    seed: int = 0
    source_class: int = 1
    target_class: int = 0

    @property
    def active(self) -> bool:
        return self.type != "none" and self.fraction > 0

    def tamper(self) -> Tamper:
        """The toolkit's settings for the malicious nodes' ``tamper_mod``."""
        return Tamper(kind=self.type, scale=self.scale, noise_std=self.noise_std,
                      value=self.value, seed=self.seed, source_class=self.source_class,
                      target_class=self.target_class)  # fmt: skip


def malicious_partitions(seed: int, fraction: float, num_partitions: int) -> frozenset[int]:
    """The partitions that misbehave: ``round(fraction * n)`` of them, chosen by ``seed``."""
    count = math.floor(fraction * num_partitions + 0.5)
    rng = np.random.default_rng([seed, 7919])
    return frozenset(int(p) for p in rng.choice(num_partitions, size=count, replace=False))


Relabel = Callable[[torch.Tensor], torch.Tensor]


class FlippedLabels(Dataset):
    """A dataset whose labels read through ``relabel``."""

    def __init__(self, data: Dataset, relabel: Relabel) -> None:
        self.data, self.relabel = data, relabel

    def __len__(self) -> int:
        return dataset_size(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data[i]
        return x, self.relabel(torch.as_tensor(y))


def poison(data: ClientData, num_classes: int, msg: Message) -> ClientData:
    """Poison the training labels of a node the server told to (``label-flip``,
    ``label-flip-target``); validation data stays honest."""
    record = settings_record(msg, TAMPER_RECORD)
    kind = None if record is None else record.get("kind")
    if kind == "label-flip":
        return ClientData(train=flip_labels(data.train, num_classes), val=data.val)
    if kind == "label-flip-target":
        assert record is not None
        attack = Tamper.from_record(record)
        if max(attack.source_class, attack.target_class) >= num_classes:
            raise ValueError(
                f"label-flip-target {attack.source_class} -> {attack.target_class}: the task "
                f"has classes 0..{num_classes - 1}; set attack.source-class/target-class"
            )
        train = poisoned_subset(data.train, attack.source_class, attack.target_class)
        return ClientData(train=train, val=data.val)
    return data


def _relabel(data: Dataset, relabel: Relabel) -> Dataset:
    """In-memory tensor datasets stay tensor datasets; others read through a view."""
    if isinstance(data, TensorDataset):
        x, y = data.tensors
        return TensorDataset(x, relabel(y))
    return FlippedLabels(data, relabel)


def flip_labels(data: Dataset, num_classes: int) -> Dataset:
    """Labels ``y -> num_classes - 1 - y``."""
    return _relabel(data, lambda y: (num_classes - 1) - y)


def flip_target(data: Dataset, source: int, target: int) -> Dataset:
    """Labels ``source -> target``; every other label stays."""
    return _relabel(data, lambda y: torch.where(y == source, torch.full_like(y, target), y))


def poisoned_subset(data: Dataset, source: int, target: int) -> Dataset:
    """The ``source``-class samples only, labelled ``target`` (a sybil's poisoned data).

    A partition without any source-class sample has nothing to poison and is
    returned as it is: that client trains honestly.
    """
    if isinstance(data, TensorDataset):
        keep = torch.nonzero(data.tensors[1] == source).flatten()
    else:
        keep = torch.tensor([i for i in range(dataset_size(data)) if int(data[i][1]) == source])
    if len(keep) == 0:
        return data
    if isinstance(data, TensorDataset):
        return flip_target(TensorDataset(*(t[keep] for t in data.tensors)), source, target)
    return flip_target(Subset(data, keep.tolist()), source, target)
