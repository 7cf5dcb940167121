"""Server-keyed HE end to end through Flower: clients train on [[w]] and never hold a key."""

import base64
import json
from pathlib import Path

import pytest
import tenseal as ts
from flwr.app import Array, Context, Message

from app.simulation import simulate
from flwr_privacy.he import Payload, keygen
from flwr_privacy.strategy.server_keyed import ServerKeyedModel
from tests.clients import clients_with

pytestmark = pytest.mark.slow  # real processes or the engine: tests/conftest.py

ROUNDS = 3
TAYLOR = {"num-server-rounds": ROUNDS, "breast-cancer.loss": "taylor"}
CKKS = {"he.backend": "ckks", "he.mode": "server-keyed", "he.coeff-mod-bit-sizes": "60,40,60"}


def test_wrapper_refuses_a_public_only_key() -> None:
    from flwr.serverapp.strategy import FedAvg

    with pytest.raises(ValueError, match="must hold its own secret key"):
        ServerKeyedModel(FedAvg(), bundle=keygen("paillier", {"key-bits": 2048}).public_only())


def test_encrypted_model_training_matches_plaintext_taylor(tmp_path: Path) -> None:
    # Prepare: each client notes what it receives for training (clients run in other processes)
    notes = tmp_path / "received"
    notes.mkdir()

    def record(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN202
        if msg.metadata.message_type == "train":
            payload = Payload.from_arrays(msg.content["arrays"])
            public = ts.context_from(base64.b64decode(payload.header.extra["public"]))
            note = {"mode": payload.header.extra["mode"], "private": public.is_private(),
                    "config": sorted(msg.content["config"].keys())}  # fmt: skip
            name = f"{context.node_id}-{msg.content['config']['server-round']}.json"
            (notes / name).write_text(json.dumps(note))
        return call_next(msg, context)

    # Execute
    plain = simulate(TAYLOR | {"output-dir": str(tmp_path / "p")}, num_supernodes=4)
    enc = simulate(TAYLOR | CKKS | {"output-dir": str(tmp_path / "e")}, num_supernodes=4,
                   clients=clients_with(record))  # fmt: skip
    # Assert: same accuracy per round (central evaluation on the server), no federated eval
    assert enc["status"] == "completed"
    for p, e in zip(plain["rounds"], enc["rounds"], strict=True):
        assert abs(p["server"]["accuracy"] - e["server"]["accuracy"]) <= 0.01
        assert e["evaluate"] is None and e["failures"] == []
        assert e["train"]["he-affine-error"] < 1e-4
    assert enc["final"]["accuracy"] >= 0.9
    # Assert: clients got ciphertexts and public parameters, never a secret key
    received = [json.loads(f.read_text()) for f in notes.glob("*.json")]
    assert len(received) == 4 * ROUNDS
    for note in received:
        assert note["mode"] == "server-keyed" and note["private"] is False
        assert not any("bundle" in k for k in note["config"])


def _truncate_from_partition_1(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN202
    reply = call_next(msg, context)
    if context.node_config["partition-id"] == 1 and msg.metadata.message_type == "train":
        chunk = reply.content["arrays"]["he-chunk-000000"]
        reply.content["arrays"]["he-chunk-000000"] = Array(chunk.dtype, (64,), chunk.stype,
                                                           chunk.data[:64])  # fmt: skip
    return reply


def test_a_garbage_reply_is_rejected_and_the_round_goes_on(tmp_path: Path) -> None:
    results = simulate(
        TAYLOR | {"num-server-rounds": 1, "output-dir": str(tmp_path), "he.backend": "paillier",
                  "he.mode": "server-keyed", "strategy": "fedprox"},
        num_supernodes=3, clients=clients_with(_truncate_from_partition_1),
    )  # fmt: skip
    assert results["status"] == "completed"
    (r,) = results["rounds"]
    assert r["train"]["num-replies"] == 2
    (failure,) = r["failures"]
    assert (
        "invalid encrypted model" in failure["reason"] and "Paillier chunk 0" in failure["reason"]
    )
    assert results["final"]["accuracy"] >= 0.8
