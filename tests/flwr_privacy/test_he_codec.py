"""Encrypted aggregation equals plaintext FedAvg; bad payloads are refused with a reason."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwr_privacy.he import (
    EncodeSettings,
    KeyBundle,
    PayloadError,
    aggregate,
    decrypt_arrays,
    encrypt_arrays,
    keygen,
)
from flwr_privacy.he.paillier import Packing, pack, unpack
from flwr_privacy.he.payload import Payload
from flwr_privacy.he.quantize import error_bound


def _clients(n: int, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    arrays = [
        {"w": rng.uniform(-1, 1, (4, 25)).astype(np.float32), "b": rng.uniform(-1, 1, 3)}
        for _ in range(n)
    ]
    sizes = rng.integers(1, 500, n)
    return arrays, sizes / sizes.max()  # unequal weights, the largest is 1


def _fedavg(arrays: list[dict], weights: np.ndarray) -> dict:
    return {
        k: sum(w * a[k].astype(np.float64) for a, w in zip(arrays, weights, strict=True))
        / weights.sum()
        for k in arrays[0]
    }


def _run(keys: KeyBundle, n: int, s: EncodeSettings, seed: int = 0) -> tuple[dict, dict, Payload]:
    rng = np.random.default_rng(seed)
    arrays, weights = _clients(n, rng)
    payloads = [
        encrypt_arrays(a, bundle=keys, weight=w, settings=s, rng=rng)
        for a, w in zip(arrays, weights, strict=True)
    ]
    summed = aggregate(payloads, bundle=keys.public_only())
    return decrypt_arrays(summed, bundle=keys), _fedavg(arrays, weights), summed


@pytest.mark.parametrize("n", [2, 10, 100])
def test_ckks_matches_fedavg_within_1e5(ckks_keys: KeyBundle, n: int) -> None:
    got, ref, _ = _run(ckks_keys, n, EncodeSettings(clip=1.0, max_count=n))
    assert max(np.abs(got[k] - ref[k]).max() for k in ref) <= 1e-5
    assert got["w"].dtype == np.float32 and got["w"].shape == (4, 25)


@pytest.mark.parametrize("n", [2, 10, 100])
@pytest.mark.parametrize("bits", [11, 16])
def test_packed_paillier_within_quantization_bound(
    paillier_keys: KeyBundle, n: int, bits: int
) -> None:
    got, ref, summed = _run(paillier_keys, n, EncodeSettings(clip=1.0, bits=bits, max_count=n))
    bound = error_bound(bound=1.0, bits=bits, count=n, weight=summed.header.weight)
    err = max(np.abs(got[k] - ref[k]).max() for k in ref)
    assert err <= bound, (err, bound)


def test_naive_paillier_agrees_with_packed(paillier_keys: KeyBundle) -> None:
    naive, ref, summed = _run(paillier_keys, 3, EncodeSettings(clip=1.0, max_count=3, packed=False))
    bound = error_bound(bound=1.0, bits=16, count=3, weight=summed.header.weight)
    assert max(np.abs(naive[k] - ref[k]).max() for k in ref) <= bound
    assert len(summed.chunks[0]) // 512 == 103  # one ciphertext per value


def test_clipped_values_are_counted(keys: KeyBundle) -> None:
    payload = encrypt_arrays(
        {"w": np.array([0.5, 7.0, -9.0])},
        bundle=keys,
        weight=1.0,
        settings=EncodeSettings(clip=4.0),
    )
    assert payload.header.clipped == 2
    np.testing.assert_allclose(
        decrypt_arrays(payload, bundle=keys)["w"], [0.5, 4.0, -4.0], atol=1e-3
    )


def test_full_slots_at_capacity_do_not_wrap(paillier_keys: KeyBundle) -> None:
    # Every client sends the largest value: each slot holds its maximum sum.
    s = EncodeSettings(clip=1.0, bits=8, max_count=5)
    payloads = [
        encrypt_arrays({"w": np.ones(300)}, bundle=paillier_keys, weight=1.0, settings=s)
        for _ in range(5)
    ]
    out = decrypt_arrays(
        aggregate(payloads, bundle=paillier_keys.public_only()), bundle=paillier_keys
    )
    np.testing.assert_allclose(out["w"], 1.0, atol=1e-9)
    with pytest.raises(PayloadError, match="exceed"):
        aggregate(payloads + payloads[:1], bundle=paillier_keys.public_only())


@settings(max_examples=30, deadline=None)
@given(
    bits=st.integers(2, 24),
    headroom=st.integers(0, 8),
    values=st.lists(st.integers(0, 2**24 - 1), min_size=1, max_size=300),
)
def test_pack_unpack_round_trip(bits: int, headroom: int, values: list[int]) -> None:
    packing = Packing(
        bits=bits, slot_bits=bits + headroom, per_ct=2047 // (bits + headroom), packed=True
    )
    u = np.array(values, dtype=np.uint64) % np.uint64(2**bits)
    assert np.array_equal(unpack(pack(u, packing), packing, len(u)), u)


def _tamper(payload: Payload, **changes: object) -> Payload:
    return dataclasses.replace(payload, **changes)


def test_bad_payloads_are_refused_with_a_reason(keys: KeyBundle) -> None:
    s = EncodeSettings(clip=1.0, max_count=2)
    good = encrypt_arrays({"w": np.ones(10)}, bundle=keys, weight=1.0, settings=s)
    server = keys.public_only()
    truncated = _tamper(good, chunks=(good.chunks[0][: len(good.chunks[0]) // 2 - 1],))
    garbage = _tamper(good, chunks=(b"\x00\xff" * 100,))
    other_key = encrypt_arrays(
        {"w": np.ones(10)}, bundle=keygen(keys.backend), weight=1.0, settings=s
    )
    for bad, reason in [
        (truncated, "chunk 0"),
        (garbage, "chunk 0"),
        (other_key, "different key generations"),
    ]:
        with pytest.raises(PayloadError, match=reason):
            aggregate([good, bad], bundle=server)
    with pytest.raises(PayloadError, match="no header"):
        Payload.from_arrays(type(good.to_arrays())())


def test_saved_payload_round_trips(ckks_keys: KeyBundle, tmp_path) -> None:  # noqa: ANN001
    from flwr_privacy.he import load_payload, save_payload

    payload = encrypt_arrays(
        {"w": np.ones(5)}, bundle=ckks_keys, weight=1.0, settings=EncodeSettings()
    )
    assert load_payload(save_payload(payload, tmp_path / "m.he.json")) == payload
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PayloadError, match="not a saved payload"):
        load_payload(tmp_path / "bad.json")


def test_each_client_payload_is_validated_on_its_own(keys: KeyBundle) -> None:
    from flwr_privacy.he import validate_payload

    s = EncodeSettings(clip=1.0, max_count=2)
    good = encrypt_arrays({"w": np.ones(5000)}, bundle=keys, weight=1.0, settings=s)
    server = keys.public_only()
    validate_payload(good, bundle=server)
    dropped = _tamper(
        good, chunks=good.chunks[:-1] if len(good.chunks) > 1 else (good.chunks[0][:512],)
    )
    with pytest.raises(PayloadError):
        validate_payload(dropped, bundle=server)
    # All-ones bytes: not a CKKS ciphertext, and above n^2 for Paillier.
    garbage = _tamper(good, chunks=(b"\xff" * len(good.chunks[0]),) + good.chunks[1:])
    with pytest.raises(PayloadError):
        validate_payload(garbage, bundle=server)
