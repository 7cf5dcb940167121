"""The client HE mod, called as Flower calls it: mod(msg, context, call_next)."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from flwr_privacy.he import EncodeSettings, KeyBundle, Payload, encrypt_arrays, is_encrypted, keygen
from flwr_privacy.mods.he import he_mod, make_he_mod
from flwr_privacy.records import HE_RECORD
from flwr_privacy.settings import HeRound

WEIGHTS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 10}


pytestmark = pytest.mark.usefixtures("server_identity")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyBundle, Path]:
    keys = keygen("ckks")
    return keys, keys.save(tmp_path_factory.mktemp("keys") / "client.json")


def _record(server_round: int = 1, fingerprint: str = "") -> ConfigRecord:
    """What EncryptedFedAvg writes on its messages (the mod reads nothing else)."""
    return HeRound(
        backend="ckks", clip=4.0, bits=16, packed=True, workers=1, max_count=4,
        weight_scale=20.0, weight_key="num-examples", server_round=server_round, seed=0,
        fingerprint=fingerprint,
    ).to_record()  # fmt: skip


def _message(arrays: ArrayRecord, kind: str = "train", he: bool = True) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    if he:
        content[HE_RECORD] = _record()
    return Message(content=content, dst_node_id=1, message_type=kind)


def _context(path: Path | None) -> Context:
    node_config = {"partition-id": 0, "num-partitions": 4}
    if path is not None:
        node_config["he-client-bundle"] = str(path)
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def _task(seen: list) -> callable:
    """Stands in for the ClientApp: records what it received and replies with plaintext."""

    def call_next(msg: Message, ctx: Context) -> Message:
        seen.append({k: a.numpy() for k, a in msg.content["arrays"].items()})
        reply = RecordDict(
            {"arrays": ArrayRecord({k: Array(v) for k, v in WEIGHTS.items()}),
             "metrics": MetricRecord({"num-examples": 10, "loss": 0.5})}
        )  # fmt: skip
        return Message(content=reply, reply_to=msg)

    return call_next


def test_train_reply_leaves_encrypted_and_global_arrives_decrypted(bundle_path) -> None:
    keys, path = bundle_path
    # Prepare: the server sends an encrypted global model (sum of two weight-1/2 updates)
    s = EncodeSettings(max_count=4)
    parts = [encrypt_arrays({"w": WEIGHTS["w"] * 2}, bundle=keys, weight=0.5, settings=s)]
    seen: list = []
    # Execute
    reply = he_mod(_message(parts[0].to_arrays()), _context(path), _task(seen))
    # Assert: the task saw plaintext; the reply carries ciphertext only
    np.testing.assert_allclose(seen[0]["w"], WEIGHTS["w"] * 2, atol=1e-6)
    assert is_encrypted(reply.content["arrays"])
    payload = Payload.from_arrays(reply.content["arrays"])
    assert payload.header.fingerprint == keys.fingerprint and payload.header.weight == 0.5
    assert reply.content["metrics"]["he-weight"] == 0.5  # 10 examples / weight scale 20
    assert reply.content["metrics"]["num-examples"] == 10


def test_plaintext_passes_when_he_is_optional_and_off(bundle_path) -> None:
    seen: list = []
    plain = ArrayRecord({"w": Array(WEIGHTS["w"])})
    reply = make_he_mod(required=False)(_message(plain, he=False), _context(None), _task(seen))
    assert not reply.has_error() and not is_encrypted(reply.content["arrays"])
    assert len(seen) == 1


def test_required_mod_refuses_a_message_without_the_server_record(bundle_path) -> None:
    seen: list = []
    plain = ArrayRecord({"w": Array(WEIGHTS["w"])})
    reply = he_mod(_message(plain, he=False), _context(bundle_path[1]), _task(seen))
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "flwr-privacy.he" in reply.error.reason and "EncryptedFedAvg" in reply.error.reason
    assert seen == []  # never trains (and so never sends plaintext) without the server's layer


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("clip", None, "'clip' is missing"), ("bits", "16", "'bits' = '16' is not int"),
     ("packed", 1, "'packed' = 1 is not bool")],
)  # fmt: skip
def test_incomplete_record_is_an_error_naming_the_key(bundle_path, key, value, expected) -> None:
    msg = _message(ArrayRecord({"w": Array(WEIGHTS["w"])}))
    if value is None:
        del msg.content[HE_RECORD][key]
    else:
        msg.content[HE_RECORD][key] = value
    reply = he_mod(msg, _context(bundle_path[1]), _task([]))
    assert reply.has_error() and expected in reply.error.reason
    assert "EncryptedFedAvg" in reply.error.reason


def test_explicit_bundle_needs_no_node_config(bundle_path) -> None:
    keys, path = bundle_path
    mod = make_he_mod(client_bundle=path)
    reply = mod(_message(ArrayRecord({"w": Array(WEIGHTS["w"])})), _context(None), _task([]))
    assert Payload.from_arrays(reply.content["arrays"]).header.fingerprint == keys.fingerprint


def test_missing_bundle_gives_an_error_reply() -> None:
    reply = he_mod(_message(ArrayRecord({"w": Array(WEIGHTS["w"])})), _context(None), _task([]))
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "he-client-bundle" in reply.error.reason


def test_global_model_under_another_key_is_refused(bundle_path) -> None:
    _, path = bundle_path
    foreign = encrypt_arrays(
        {"w": WEIGHTS["w"]}, bundle=keygen("ckks"), weight=1.0, settings=EncodeSettings()
    )
    seen: list = []
    reply = he_mod(_message(foreign.to_arrays()), _context(path), _task(seen))
    assert reply.has_error() and "different key generations" in reply.error.reason
    assert seen == []  # the task never ran


def test_error_replies_pass_through_untouched(bundle_path) -> None:
    from flwr.app import Error

    _, path = bundle_path

    def failing(msg: Message, ctx: Context) -> Message:
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="boom"), reply_to=msg
        )

    reply = he_mod(_message(ArrayRecord({"w": Array(WEIGHTS["w"])})), _context(path), failing)
    assert reply.has_error() and reply.error.reason == "boom"


def _score_query(keys: KeyBundle, chunks: list[bytes], server_round: int = 1) -> Message:
    from flwr_privacy.he.protocol import FINGERPRINT_KEY, SCORES_KEY

    cfg = ConfigRecord(
        {SCORES_KEY: chunks, FINGERPRINT_KEY: keys.fingerprint, "server-round": server_round}
    )
    content = RecordDict({"config": cfg, HE_RECORD: _record(server_round)})
    return Message(content, dst_node_id=1, message_type="query.he_scores")


def test_score_query_decrypts_scalars_once_per_round(tmp_path: Path) -> None:
    from flwr_privacy.he import encrypted_scores
    from flwr_privacy.mods.he import decrypt_scores

    keys = keygen("ckks", {"coeff-mod-bit-sizes": [60, 40, 40, 60], "eval-keys": True})
    path = keys.for_client().save(tmp_path / "client.json")
    updates = [np.full((2, 3), v, np.float32) for v in (0.0, 1.0, 2.0, 3.0)]
    payloads = [
        encrypt_arrays({"w": u}, bundle=keys, weight=1.0, settings=EncodeSettings())
        for u in updates
    ]
    cts = encrypted_scores(payloads, bundle=keys.public_only(), kinds=("mean-distance",),
                           reference={"w": np.zeros((2, 3))})["mean-distance"]  # fmt: skip
    ctx = _context(path)
    idle = decrypt_scores(_score_query(keys, cts), ctx)
    assert idle.has_error() and "did not train in round 1" in idle.error.reason

    def train(server_round: int) -> None:  # the HE mod records the rounds a node trained in
        msg = _message(ArrayRecord({"w": Array(WEIGHTS["w"])}))
        msg.content[HE_RECORD]["server-round"] = server_round
        assert not he_mod(msg, ctx, _task([])).has_error()

    train(1)
    reply = decrypt_scores(_score_query(keys, cts), ctx)
    assert not reply.has_error()
    # mean 1.5: squared deviations 2.25, 0.25, 0.25, 2.25 per value (3 significant digits)
    assert reply.content["metrics"]["he.scores"] == [2.25, 0.25, 0.25, 2.25]
    again = decrypt_scores(_score_query(keys, cts), ctx)
    assert again.has_error() and "already decrypted" in again.error.reason
    train(2)
    vector = list(payloads[0].chunks)  # a whole update is no scalar: refused
    refused = decrypt_scores(_score_query(keys, vector, server_round=2), ctx)
    assert refused.has_error() and "not one scalar" in refused.error.reason
    train(3)
    foreign = decrypt_scores(_score_query(keygen("ckks"), cts, server_round=3), ctx)
    assert foreign.has_error() and "this node holds" in foreign.error.reason
