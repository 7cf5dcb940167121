"""The attack harness: which nodes misbehave, and how each attack changes an update."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch.utils.data import TensorDataset

from app.attack import Attack, flip_labels, flip_target, malicious_partitions, poison
from flwr_privacy.mods.tamper import Tamper, tamper_mod
from flwr_privacy.records import TAMPER_RECORD
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
    out = Attack(type=kind, fraction=0.5).tamper().tamper(update, sent, np.random.default_rng(0))
    assert out == pytest.approx(expected)


def test_gaussian_attack_replaces_the_update_with_noise() -> None:
    sent, update = np.zeros(10_000), np.ones(10_000)
    out = Tamper(kind="gaussian", noise_std=2.0).tamper(update, sent, np.random.default_rng(0))
    assert abs(out.mean()) < 0.1 and out.std() == pytest.approx(2.0, rel=0.05)


def test_label_flip_poisons_only_malicious_training_labels() -> None:
    data = ClientData(
        train=TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])),
        val=TensorDataset(torch.zeros(2, 2), torch.tensor([0, 1])),
    )
    flipped = poison(data, 2, _message("label-flip"))  # the server told this node
    assert flipped.train.tensors[1].tolist() == [1, 0, 0, 1]
    assert flipped.val is data.val
    assert poison(data, 2, _message(None)) is data  # an honest node
    assert poison(data, 2, _message("sign-flip")) is data  # an update attack: data stays
    assert flip_labels(data.train, 5).tensors[1].tolist() == [4, 3, 3, 4]


def _message(kind: str | None) -> Message:
    """A train message; ``kind``: the server's Tampering layer chose this node for it."""
    arrays = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    if kind is not None:
        content[TAMPER_RECORD] = Tamper(kind=kind).to_record(server_round=1)
    return Message(content, dst_node_id=1, message_type="train")


def _train(msg: Message, ctx: Context) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord({"w": Array(np.ones(3, np.float32))}),
         "metrics": MetricRecord({"num-examples": 5})}
    )  # fmt: skip
    return Message(content, reply_to=msg)


@pytest.mark.parametrize("malicious", [True, False])
def test_tamper_mod_tampers_only_nodes_the_server_chose(malicious: bool) -> None:
    ctx = Context(
        run_id=1, node_id=1, node_config={"partition-id": 3, "num-partitions": 10},
        state=RecordDict(), run_config={},
    )  # fmt: skip
    reply = tamper_mod(_message("sign-flip" if malicious else None), ctx, _train)
    expected = -1.0 if malicious else 1.0  # sign flip of update +1 around 0
    assert reply.content["arrays"]["w"].numpy() == pytest.approx([expected] * 3)


def test_tampering_layer_marks_only_the_malicious_nodes(server_identity: None) -> None:
    from flwr.serverapp.strategy import FedAvg

    from flwr_privacy.strategy.tamper import Tampering

    class TwoNodes:  # the part of Flower's Grid that FedAvg.configure_train uses
        def get_node_ids(self) -> list[int]:
            return [11, 12]

    strategy = Tampering(FedAvg(), attack=Tamper(kind="scale"), nodes={12})
    arrays = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    messages = strategy.configure_train(1, arrays, ConfigRecord(), TwoNodes())  # type: ignore[arg-type]  # a stand-in grid
    marked = {m.metadata.dst_node_id: TAMPER_RECORD in m.content for m in messages}
    assert marked == {11: False, 12: True}


def test_targeted_label_flip_trains_on_relabelled_source_samples_only() -> None:
    data = ClientData(
        train=TensorDataset(torch.arange(5.0)[:, None], torch.tensor([0, 1, 2, 1, 3])),
        val=TensorDataset(torch.zeros(2, 1), torch.tensor([1, 2])),
    )
    record = Tamper(kind="label-flip-target", source_class=2, target_class=3).to_record(1)
    msg = _message(None)
    msg.content[TAMPER_RECORD] = record
    poisoned = poison(data, 4, msg)
    assert poisoned.train.tensors[1].tolist() == [3]
    assert poisoned.train.tensors[0].flatten().tolist() == [2.0]  # the class-2 sample
    assert poisoned.val is data.val
    default = poison(data, 4, _message("label-flip-target"))  # 1 -> 0 unless told otherwise
    assert default.train.tensors[1].tolist() == [0, 0]
    assert default.train.tensors[0].flatten().tolist() == [1.0, 3.0]
    no_source = ClientData(
        train=TensorDataset(torch.zeros(2, 1), torch.tensor([0, 2])), val=data.val
    )
    assert poison(no_source, 4, _message("label-flip-target")).train is no_source.train
    assert flip_target(data.train, 1, 0).tensors[1].tolist() == [0, 0, 2, 0, 3]
    with pytest.raises(ValueError, match="classes 0..1"):
        poison(data, 2, msg)  # class 3 does not exist in a 2-class task
    with pytest.raises(ValueError, match="two different class indices"):
        Tamper(kind="label-flip-target", source_class=1, target_class=1)
