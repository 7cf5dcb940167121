"""Encrypted box-plot scores: equal to the plaintext scores, computed without a secret key."""

import numpy as np
import pytest

from flwr_privacy.he import (
    BundleError,
    EncodeSettings,
    KeyBundle,
    PayloadError,
    aggregate,
    ckks,
    encrypt_arrays,
    encrypted_scores,
    keygen,
)
from flwr_privacy.strategy.box_plot import client_scores


def _payloads(updates: np.ndarray, weights: np.ndarray, keys: KeyBundle) -> list:
    return [
        encrypt_arrays(
            {"w": u.reshape(2, -1)}, bundle=keys, weight=float(w), settings=EncodeSettings(clip=4.0)
        )  # fmt: skip
        for u, w in zip(updates, weights, strict=True)
    ]


@pytest.mark.parametrize("size", [30, 5000])  # one and two ciphertexts per client
def test_encrypted_scores_equal_plaintext_scores(ckks_eval_keys: KeyBundle, size: int) -> None:
    rng = np.random.default_rng(size)
    updates = rng.normal(0.3, 0.05, (6, size))
    updates[4] *= -3  # an outlier
    weights = rng.uniform(0.2, 1.0, 6)
    server = ckks_eval_keys.public_only()
    payloads = _payloads(updates, weights, ckks_eval_keys)
    sent = {"w": rng.normal(0.3, 0.01, size).reshape(2, -1)}
    expected = client_scores(updates, sent["w"].ravel(), ("mean-distance", "norm"))
    # Round 1: plaintext global model; later rounds: the encrypted sum as global model.
    global_sum = aggregate(_payloads(sent["w"].reshape(1, -1), [0.5], ckks_eval_keys),
                           bundle=server)  # fmt: skip
    for reference in (sent, global_sum):
        cts = encrypted_scores(payloads, bundle=server, kinds=("mean-distance", "norm"),
                               reference=reference)  # fmt: skip
        for kind, chunks in cts.items():
            msd = np.array(ckks.decrypt_scalars(chunks, ckks_eval_keys))
            # CKKS noise after the weight division and the square is ~1e-5 on a mean
            # square of ~2.5e-3 here (measured up to 8e-6): 1 % on msd, 0.5 % on the score.
            assert msd == pytest.approx(expected[kind] ** 2, rel=1e-2)


def test_server_side_material_cannot_decrypt(ckks_eval_keys: KeyBundle) -> None:
    server = ckks_eval_keys.public_only()
    assert not ckks.context(server, secret=False, evaluation=True).is_private()
    with pytest.raises(BundleError, match="public-only"):
        ckks.decrypt_scalars([], server)
    assert ckks_eval_keys.for_client().evaluation is None  # clients carry no eval keys


def test_scores_need_evaluation_keys(ckks_keys: KeyBundle) -> None:
    payloads = _payloads(np.ones((4, 4)), np.ones(4), ckks_keys)
    with pytest.raises(BundleError, match="no evaluation keys"):
        encrypted_scores(payloads, bundle=ckks_keys.public_only(), kinds=("mean-distance",),
                         reference={"w": np.zeros((2, 2))})  # fmt: skip


def test_paillier_cannot_score(paillier_keys: KeyBundle) -> None:
    payloads = _payloads(np.ones((4, 4)), np.ones(4), paillier_keys)
    with pytest.raises(PayloadError, match="Paillier only adds"):
        encrypted_scores(payloads, bundle=paillier_keys.public_only(), kinds=("norm",),
                         reference={"w": np.zeros((2, 2))})  # fmt: skip


def test_a_key_holder_decrypts_scalars_only(ckks_eval_keys: KeyBundle) -> None:
    vector = _payloads(np.ones((1, 8)), np.ones(1), ckks_eval_keys)[0]
    with pytest.raises(PayloadError, match="holds 8 values, not one scalar"):
        ckks.decrypt_scalars(list(vector.chunks), ckks_eval_keys)


def test_evaluation_keys_survive_the_bundle_file(ckks_eval_keys: KeyBundle, tmp_path) -> None:
    from flwr_privacy.he import load_bundle

    path = ckks_eval_keys.public_only().save(tmp_path / "server.json")
    loaded = load_bundle(path, expect_private=False)
    assert loaded.evaluation == ckks_eval_keys.evaluation
    assert loaded.fingerprint == ckks_eval_keys.fingerprint
    text = path.read_text().replace('"evaluation": "', '"evaluation": "AAAA', 1)
    path.write_text(text)
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(path)


def test_eval_keys_need_two_levels() -> None:
    with pytest.raises(BundleError, match="60,40,40,60"):
        keygen("ckks", {"eval-keys": True})
