"""The attack harness: which nodes misbehave, and how each attack changes an update."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch.utils.data import TensorDataset

from app.attack import Attack, attack_mod, flip_labels, malicious_partitions, poison
from tasks.base import ClientData

pytestmark = pytest.mark.usefixtures("server_identity")


def test_malicious_partitions_are_seeded_and_counted() -> None:
    first = malicious_partitions(0, 0.3, 10)
    assert len(first) == 3 and first == malicious_partitions(0, 0.3, 10)
    assert malicious_partitions(1, 0.3, 10) != first  # another seed, another set
    assert len(malicious_partitions(0, 0.25, 10)) == 3  # rounds half up
    assert malicious_partitions(0, 0.0, 10) == frozenset()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("sign-flip", [0.0, 2.0]),  # sent - (update - sent)
        ("scale", [11.0, -9.0]),  # sent + 10 (update - sent)
        ("same-value", [11.0, 11.0]),  # sent + 10 everywhere
    ],
)
def test_update_attacks(kind: str, expected: list[float]) -> None:
    sent, update = np.array([1.0, 1.0]), np.array([2.0, 0.0])
    out = Attack(type=kind, fraction=0.5).tamper(update, sent, np.random.default_rng(0))
    assert out == pytest.approx(expected)


def test_gaussian_attack_replaces_the_update_with_noise() -> None:
    sent, update = np.zeros(10_000), np.ones(10_000)
    out = Attack(type="gaussian", fraction=0.5, noise_std=2.0).tamper(
        update, sent, np.random.default_rng(0)
    )
    assert abs(out.mean()) < 0.1 and out.std() == pytest.approx(2.0, rel=0.05)


def test_label_flip_poisons_only_malicious_training_labels() -> None:
    data = ClientData(
        train=TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])),
        val=TensorDataset(torch.zeros(2, 2), torch.tensor([0, 1])),
    )
    cfg = {"attack.type": "label-flip", "attack.fraction": 0.3, "seed": 0}
    bad = sorted(malicious_partitions(0, 0.3, 10))
    good = next(p for p in range(10) if p not in bad)
    flipped = poison(data, 2, cfg, (bad[0], 10))
    assert flipped.train.tensors[1].tolist() == [1, 0, 0, 1]
    assert flipped.val is data.val
    assert poison(data, 2, cfg, (good, 10)) is data
    assert flip_labels(data.train, 5).tensors[1].tolist() == [4, 3, 3, 4]


def _message(partition_kind: str) -> Message:
    cfg = ConfigRecord(
        {"attack.type": partition_kind, "attack.fraction": 0.3, "attack.scale": 10.0,
         "attack.noise-std": 1.0, "attack.value": 10.0, "seed": 0, "server-round": 1}
    )  # fmt: skip
    arrays = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    return Message(
        RecordDict({"arrays": arrays, "config": cfg}), dst_node_id=1, message_type="train"
    )


def _train(msg: Message, ctx: Context) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord({"w": Array(np.ones(3, np.float32))}),
         "metrics": MetricRecord({"num-examples": 5})}
    )  # fmt: skip
    return Message(content, reply_to=msg)


@pytest.mark.parametrize("malicious", [True, False])
def test_attack_mod_tampers_only_malicious_nodes(malicious: bool) -> None:
    bad = sorted(malicious_partitions(0, 0.3, 10))
    partition = bad[0] if malicious else next(p for p in range(10) if p not in bad)
    ctx = Context(
        run_id=1, node_id=1, node_config={"partition-id": partition, "num-partitions": 10},
        state=RecordDict(), run_config={},
    )  # fmt: skip
    reply = attack_mod(_message("sign-flip"), ctx, _train)
    expected = -1.0 if malicious else 1.0  # sign flip of update +1 around 0
    assert reply.content["arrays"]["w"].numpy() == pytest.approx([expected] * 3)
