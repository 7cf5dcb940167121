"""Server-keyed HE: clients apply an affine map to a model they cannot decrypt."""

import base64
from dataclasses import replace

import numpy as np
import pytest
import tenseal as ts

from flwr_privacy.he import KeyBundle, Payload, PayloadError, keygen, paillier
from flwr_privacy.he.model import apply_affine, check_params, decrypt_model, encrypt_model


@pytest.fixture(scope="module")
def ckks_model_keys() -> KeyBundle:
    return keygen("ckks", {"coeff-mod-bit-sizes": [60, 40, 60]})


@pytest.fixture(params=["ckks", "paillier"])
def model_keys(request: pytest.FixtureRequest, ckks_model_keys: KeyBundle,
               paillier_keys: KeyBundle) -> KeyBundle:  # fmt: skip
    return ckks_model_keys if request.param == "ckks" else paillier_keys


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"linear.weight": rng.normal(size=(1, 6)).astype(np.float32),
            "linear.bias": rng.normal(size=(1,)).astype(np.float32)}  # fmt: skip


def test_encrypted_affine_map_equals_plaintext(model_keys: KeyBundle) -> None:
    # Prepare
    rng = np.random.default_rng(0)
    arrays = _model(rng)
    w = np.concatenate([arrays["linear.weight"].ravel(), arrays["linear.bias"]]).astype(float)
    matrix, offset = rng.normal(size=(7, 7)), rng.normal(size=7)
    # Execute: server encrypts, client maps (no key), server decrypts
    out = apply_affine(encrypt_model(arrays, model_keys), matrix, offset)
    got = decrypt_model(out, model_keys)
    # Assert: the same numbers as the plaintext map, in the model's shapes and dtypes
    expected = matrix @ w + offset
    assert got["linear.weight"].shape == (1, 6) and got["linear.bias"].dtype == np.float32
    np.testing.assert_allclose(got["linear.weight"].ravel(), expected[:6], atol=1e-5)
    np.testing.assert_allclose(got["linear.bias"], expected[6:], atol=1e-5)


def test_what_clients_receive_holds_no_secret_key(model_keys: KeyBundle) -> None:
    payload = encrypt_model(_model(np.random.default_rng(1)), model_keys)
    public = base64.b64decode(payload.header.extra["public"])
    if model_keys.backend == "ckks":
        ctx = ts.context_from(public)
        assert not ctx.is_private()
        with pytest.raises(ValueError):  # TenSEAL cannot decrypt without the secret key
            ts.ckks_vector_from(ctx, payload.chunks[0]).decrypt()
    else:
        assert public == model_keys.public  # the modulus n, nothing of p and q
        assert int(public.decode()) == int(model_keys.public.decode())
    assert model_keys.secret not in public


def test_server_refuses_what_it_cannot_trust(model_keys: KeyBundle, ckks_keys: KeyBundle,
                                             paillier_keys: KeyBundle) -> None:  # fmt: skip
    rng = np.random.default_rng(2)
    model = encrypt_model(_model(rng), model_keys)
    update = apply_affine(model, np.eye(7), np.zeros(7))
    other = keygen(model_keys.backend, dict(model_keys.params))
    with pytest.raises(PayloadError, match="different key generations"):
        decrypt_model(update, other)
    with pytest.raises(PayloadError, match="not a server-keyed model update"):
        decrypt_model(model, model_keys)  # the outgoing model is not a client update
    truncated = Payload(update.header, (update.chunks[0][: len(update.chunks[0]) // 2],))
    with pytest.raises(PayloadError):
        decrypt_model(truncated, model_keys)
    with pytest.raises(PayloadError, match="7 values; the local map is 3 x 3"):
        apply_affine(model, np.eye(3), np.zeros(3))


def test_paillier_value_beyond_decodable_range_is_refused(paillier_keys: KeyBundle) -> None:
    # Prepare: a client replies a valid ciphertext of n / 2, in phe's overflow band
    update = apply_affine(encrypt_model(_model(np.random.default_rng(3)), paillier_keys),
                          np.eye(7), np.zeros(7))  # fmt: skip
    pub = paillier.private_key(paillier_keys).public_key
    garbage = [pub.raw_encrypt(pub.n // 2)] * 7
    bad = Payload(update.header, tuple(paillier.to_chunks(garbage, paillier_keys)))
    # Execute / Assert: refused with the cause, never decoded into a huge weight
    with pytest.raises(PayloadError, match="overflowed the plaintext space"):
        decrypt_model(bad, paillier_keys)


def test_ckks_needs_one_multiplicative_level(ckks_keys: KeyBundle) -> None:
    with pytest.raises(ValueError, match="60,40,60"):
        check_params(ckks_keys)  # the aggregation default, moduli 60,40: no level to spare
    with pytest.raises(ValueError, match="one multiplicative level"):
        encrypt_model(_model(np.random.default_rng(4)), ckks_keys)


def test_model_needs_the_secret_key_to_encrypt(model_keys: KeyBundle) -> None:
    with pytest.raises(ValueError, match="secret key"):
        encrypt_model(_model(np.random.default_rng(5)), replace(model_keys, secret=None))
