"""Attack harness for robustness experiments: every malicious behaviour lives here.

``attack.type`` and ``attack.fraction`` (run config) pick the attack and how
many partitions are malicious; the choice is seeded by ``seed``, so the same
partitions misbehave in every run. Model-poisoning attacks tamper with the
plaintext update in ``attack_mod`` (innermost client mod: the HE mod then
encrypts the tampered update, as a real attacker's client would); label
flipping poisons the local training labels through ``poison``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from torch.utils.data import Dataset, TensorDataset

from app.records import ARRAYS, CONFIG
from tasks.base import ClientData

ATTACKS = ("none", "sign-flip", "scale", "gaussian", "label-flip", "same-value")
UPDATE_ATTACKS = ("sign-flip", "scale", "gaussian", "same-value")


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

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Attack:
        return cls(
            type=str(cfg.get("attack.type", "none")),
            fraction=float(cfg.get("attack.fraction", 0.0)),
            scale=float(cfg.get("attack.scale", 10.0)),
            noise_std=float(cfg.get("attack.noise-std", 1.0)),
            value=float(cfg.get("attack.value", 10.0)),
            seed=int(cfg.get("seed", 0)),
        )

    def as_config(self) -> dict[str, Any]:
        """What clients need, sent in each message's config."""
        return {
            "attack.type": self.type,
            "attack.fraction": self.fraction,
            "attack.scale": self.scale,
            "attack.noise-std": self.noise_std,
            "attack.value": self.value,
        }

    @property
    def active(self) -> bool:
        return self.type != "none" and self.fraction > 0

    def is_malicious(self, partition_id: int, num_partitions: int) -> bool:
        return self.active and partition_id in malicious_partitions(
            self.seed, self.fraction, num_partitions
        )

    def tamper(self, update: np.ndarray, sent: np.ndarray, rng: np.random.Generator):
        """The malicious client's weights, from its honest ``update`` and the ``sent`` model."""
        delta = update - sent
        if self.type == "sign-flip":
            return sent - delta
        if self.type == "scale":
            return sent + self.scale * delta
        if self.type == "gaussian":
            return sent + rng.normal(0.0, self.noise_std, size=delta.shape)
        if self.type == "same-value":
            return sent + np.full_like(delta, self.value)
        return update


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


def poison(
    data: ClientData, num_classes: int, cfg: Mapping[str, Any], partition: tuple[int, int]
) -> ClientData:
    """Flip a malicious node's training labels (``label-flip``); validation data stays honest."""
    attack = Attack.from_config(cfg)
    if attack.type != "label-flip" or not attack.is_malicious(*partition):
        return data
    return ClientData(train=flip_labels(data.train, num_classes), val=data.val)


def flip_labels(data: Dataset, num_classes: int) -> Dataset:
    """Labels ``y -> num_classes - 1 - y``; in-memory tensor datasets stay tensor datasets."""
    if isinstance(data, TensorDataset):
        x, y = data.tensors
        return TensorDataset(x, (num_classes - 1) - y)
    return FlippedLabels(data, num_classes)


def attack_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Tamper with a malicious node's outgoing plaintext update (model-poisoning attacks)."""
    cfg = msg.content.config_records.get(CONFIG) if msg.has_content() else None
    if msg.metadata.message_type != MessageType.TRAIN or cfg is None:
        return call_next(msg, context)
    attack = Attack.from_config(cfg)
    partition = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    if attack.type not in UPDATE_ATTACKS or not attack.is_malicious(partition, num_partitions):
        return call_next(msg, context)
    sent = {k: a.numpy().copy() for k, a in msg.content[ARRAYS].items()}
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    rng = np.random.default_rng([attack.seed, int(cfg["server-round"]), partition])
    arrays = {
        k: Array(attack.tamper(a.numpy(), sent[k], rng).astype(a.numpy().dtype))
        for k, a in reply.content[ARRAYS].items()
    }
    reply.content[ARRAYS] = ArrayRecord(arrays)
    return reply
