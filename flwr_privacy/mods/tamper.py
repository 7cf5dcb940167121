"""Update tampering for robustness experiments (never in production): the attacker's mod.

The server-side ``Tampering`` layer (``flwr_privacy.strategy.tamper``) picks the
malicious nodes and writes the ``flwr-privacy.tamper`` record on their train
messages only; this mod, innermost of the client mods, changes the outgoing
plaintext update of a node that received it. Outer mods (HE, DP) then treat the
tampered update as the node's own, as a real attacker's client would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from flwr_privacy.records import ARRAYS, TAMPER_RECORD, as_int, settings_record

__all__ = ["DATA_ATTACKS", "Tamper", "UPDATE_ATTACKS", "tamper_mod"]

UPDATE_ATTACKS = ("sign-flip", "scale", "gaussian", "same-value")
# The app poisons the training data itself: every label flipped, or one class relabelled
# as another (a targeted flip, the sybil attack FoolsGold is built against).
DATA_ATTACKS = ("label-flip", "label-flip-target")


@dataclass(frozen=True, kw_only=True)
class Tamper:
    """One malicious behaviour: ``kind`` and its strength.

    ``scale`` boosts the update (``scale``), ``noise_std`` is the standard
    deviation of the update that replaces the honest one (``gaussian``),
    ``value`` is the constant every coordinate of the update is set to
    (``same-value``). ``seed`` makes the attack's own randomness repeatable.
    ``source_class`` / ``target_class``: ``label-flip-target`` relabels the
    first as the second.
    """

    kind: str
    scale: float = 10.0
    noise_std: float = 1.0
    value: float = 10.0
    seed: int = 0
    source_class: int = 1
    target_class: int = 0

    def __post_init__(self) -> None:
        if self.kind not in (*UPDATE_ATTACKS, *DATA_ATTACKS):
            raise ValueError(
                f"Tamper.kind = {self.kind!r}; allowed: {UPDATE_ATTACKS + DATA_ATTACKS}"
            )
        if min(self.source_class, self.target_class) < 0 or self.source_class == self.target_class:
            raise ValueError(
                f"Tamper source_class = {self.source_class}, target_class = {self.target_class}: "
                "use two different class indices >= 0"
            )

    def tamper(self, update: np.ndarray, sent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The malicious client's weights, from its honest ``update`` and the ``sent`` model."""
        delta = update - sent
        if self.kind == "sign-flip":
            return sent - delta
        if self.kind == "scale":
            return sent + self.scale * delta
        if self.kind == "gaussian":
            return sent + rng.normal(0.0, self.noise_std, size=delta.shape)
        if self.kind == "same-value":
            return sent + np.full_like(delta, self.value)
        return update

    def to_record(self, server_round: int) -> ConfigRecord:
        fields = {k.replace("_", "-"): v for k, v in asdict(self).items()}
        return ConfigRecord({**fields, "server-round": server_round})

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Tamper:
        return cls(kind=str(record["kind"]), scale=float(record["scale"]),
                   noise_std=float(record["noise-std"]), value=float(record["value"]),
                   seed=int(record["seed"]), source_class=int(record.get("source-class", 1)),
                   target_class=int(record.get("target-class", 0)))  # fmt: skip


def tamper_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Tamper with the outgoing update of a node the server's ``Tampering`` layer chose."""
    record = settings_record(msg, TAMPER_RECORD)
    if msg.metadata.message_type != MessageType.TRAIN or record is None:
        return call_next(msg, context)
    attack = Tamper.from_record(record)
    if attack.kind not in UPDATE_ATTACKS:
        return call_next(msg, context)
    sent = {k: a.numpy().copy() for k, a in msg.content.array_records[ARRAYS].items()}
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    node = int(context.node_config.get("partition-id", context.node_id))
    rng = np.random.default_rng([attack.seed, as_int(record["server-round"]), node])
    arrays = {
        k: Array(attack.tamper(a.numpy(), sent[k], rng).astype(a.numpy().dtype))
        for k, a in reply.content.array_records[ARRAYS].items()
    }
    reply.content[ARRAYS] = ArrayRecord(arrays)
    return reply
