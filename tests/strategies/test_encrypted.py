"""Encrypted FedAvg end to end through Flower's simulation engine, one run per backend."""

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, Context, Message

from app.simulation import simulate
from flwr_privacy.he import keygen
from flwr_privacy.records import HE_RECORD
from flwr_privacy.strategy.encrypted import EncryptedFedAvg
from tests.clients import clients_with

ROUNDS = 3


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("plain")
    return simulate({"num-server-rounds": ROUNDS, "output-dir": str(out)}, num_supernodes=5)


def test_strategy_refuses_a_secret_key() -> None:
    with pytest.raises(ValueError, match="secret key"):
        EncryptedFedAvg(bundle=keygen("ckks"))


@pytest.mark.parametrize("backend", ["ckks", "paillier"])
@pytest.mark.slow
def test_encrypted_run_matches_plaintext(backend: str, plain_run: dict, tmp_path: Path) -> None:
    # Execute
    results = simulate(
        {"num-server-rounds": ROUNDS, "output-dir": str(tmp_path), "he.backend": backend},
        num_supernodes=5,
    )
    # Assert: same federated accuracy as plaintext, nothing decrypted on the server
    assert results["status"] == "completed"
    for plain, enc in zip(plain_run["rounds"], results["rounds"], strict=True):
        assert enc["server"] is None  # no centralized evaluation in server-blind mode
        assert abs(enc["evaluate"]["accuracy"] - plain["evaluate"]["accuracy"]) <= 0.005
        assert enc["train"]["num-replies"] == 5 and enc["failures"] == []
        assert enc["bytes-up"] > plain["bytes-up"]  # ciphertexts are larger than floats
    assert results["final"]["accuracy"] >= 0.9
    assert (Path(results["path"]).parent / "global-model.he.json").exists()


def _foreign_key(tmp_dir: Path, partitions: set[int]):  # noqa: ANN202
    """The given partitions use a bundle of another key generation."""
    foreign = str(keygen("ckks").save(tmp_dir / "foreign.json"))

    def mod(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN202
        record = msg.content.config_records.get(HE_RECORD) if msg.has_content() else None
        if context.node_config["partition-id"] in partitions and record is not None:
            record["client-bundle"] = foreign
        return call_next(msg, context)

    return mod


@pytest.mark.slow
def test_client_with_other_keys_is_rejected_and_round_goes_on(tmp_path: Path) -> None:
    # Prepare: the foreign-key mod runs before the HE mod
    bad = clients_with(_foreign_key(tmp_path, {0}))
    # Execute
    results = simulate(
        {"num-server-rounds": 2, "output-dir": str(tmp_path), "he.backend": "ckks"},
        num_supernodes=4,
        clients=bad,
    )
    # Assert: round 1 sends plaintext (every client trains), its encrypted reply is refused
    assert results["status"] == "completed"
    r1 = results["rounds"][0]
    assert r1["train"]["num-replies"] == 3
    assert any("different key generations" in f["reason"] for f in r1["failures"])
    assert results["final"]["accuracy"] >= 0.8


def _truncate_from_partition_1(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN202
    """Partition 1 cuts its encrypted training reply short (a transport or client bug)."""
    reply = call_next(msg, context)
    if context.node_config["partition-id"] == 1 and msg.metadata.message_type == "train":
        arrays = reply.content["arrays"]
        key = sorted(k for k in arrays.keys() if k.startswith("he-chunk-"))[0]
        chunk = arrays[key]
        arrays[key] = Array(chunk.dtype, (100,), chunk.stype, chunk.data[:100])
    return reply


@pytest.mark.slow
def test_truncated_ciphertext_is_rejected_and_fedprox_goes_on(tmp_path: Path) -> None:
    results = simulate(
        {"num-server-rounds": 2, "output-dir": str(tmp_path), "he.backend": "ckks",
         "strategy": "fedprox", "proximal-mu": 0.1},
        num_supernodes=4,
        clients=clients_with(_truncate_from_partition_1),
    )  # fmt: skip
    assert results["status"] == "completed"
    for r in results["rounds"]:
        assert r["train"]["num-replies"] == 3
        (failure,) = r["failures"]
        assert (
            "invalid encrypted update: CKKS chunk 0 is not a valid ciphertext" in failure["reason"]
        )
    assert results["final"]["accuracy"] >= 0.8


@pytest.mark.slow
def test_all_clients_on_other_keys_stop_the_run_in_round_one(tmp_path: Path) -> None:
    bad = clients_with(_foreign_key(tmp_path, {0, 1, 2}))
    with pytest.raises(RuntimeError):
        simulate({"num-server-rounds": 2, "output-dir": str(tmp_path), "he.backend": "ckks"},
                 num_supernodes=3, clients=bad)  # fmt: skip
    (results_file,) = tmp_path.glob("*/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "failed" and results["rounds"] == []
    error = results["error"]
    assert "AllKeysMismatched: round 1: every client encrypted under another key" in error


def test_plain_fedavg_refuses_encrypted_arrays() -> None:
    from flwr.app import MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from flwr_privacy.he import EncodeSettings, encrypt_arrays

    keys = keygen("ckks")
    payload = encrypt_arrays({"w": np.ones(4)}, bundle=keys, weight=1.0, settings=EncodeSettings())
    reply = RecordDict(
        {"arrays": payload.to_arrays(), "metrics": MetricRecord({"num-examples": 3})}
    )
    with pytest.raises(TypeError, match="Unsupported serialization type"):
        aggregate_arrayrecords([reply, reply], "num-examples")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"clip": 8.0}, "clipped to 8.0, not to 4.0"),
        ({"weight": 2.0}, "outside (0, 1]"),
        ({"arrays": {"v": np.zeros(3)}}, "differ from the global model"),
    ],
)
def test_payloads_this_round_cannot_take_are_refused(change: dict, reason: str) -> None:
    from flwr_privacy.he import EncodeSettings, PayloadError, encrypt_arrays, layout_of

    keys = keygen("ckks")
    strategy = EncryptedFedAvg(bundle=keys.public_only())
    strategy._layout, strategy._clip = layout_of({"w": np.zeros(3)}), 4.0
    strategy._settings = EncodeSettings(clip=4.0)  # the round's own encoding (configure_train)
    arrays = change.get("arrays", {"w": np.zeros(3)})
    payload = encrypt_arrays(arrays, bundle=keys, weight=min(change.get("weight", 1.0), 1.0),
                             settings=EncodeSettings(clip=change.get("clip", 4.0)))  # fmt: skip
    if "weight" in change:  # a tampered header: weights above 1 would break the headroom
        from dataclasses import replace

        payload = replace(payload, header=replace(payload.header, weight=change["weight"]))
    with pytest.raises(PayloadError, match=reason.replace("(", "\\(").replace(")", "\\)")):
        strategy._check(payload)
