"""The one small HE interface both sides use: encrypt, aggregate, decrypt named arrays.

Clients weight their update before encrypting (weight w <= 1), the server adds
ciphertexts and weights, and a key holder divides the decrypted sum by the
total weight: the weighted FedAvg mean, computed without the server reading
any update.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from flwr_privacy.he import ckks, paillier
from flwr_privacy.he.bundle import KeyBundle
from flwr_privacy.he.payload import Header, Layout, Payload, PayloadError
from flwr_privacy.he.quantize import clip, dequantize_sum, quantize


@dataclass(frozen=True)
class EncodeSettings:
    """Per-round encoding choices the server sends to every client.

    ``clip`` bounds every plaintext value; ``bits``, ``max_count`` (clients in
    the round) and ``packed`` shape Paillier slots; ``workers`` is how many
    processes a client may use for Paillier.
    """

    clip: float = 4.0
    bits: int = 16
    max_count: int = 10
    packed: bool = True
    workers: int = 1


def layout_of(arrays: dict[str, np.ndarray]) -> Layout:
    """Names, shapes and dtypes of named arrays, as a payload header records them."""
    return flatten(arrays)[0]


def flatten(arrays: dict[str, np.ndarray]) -> tuple[Layout, np.ndarray]:
    """The layout of named arrays and their values as one float64 vector, in layout order."""
    names = tuple(arrays)
    layout = Layout(
        names=names,
        shapes=tuple(tuple(np.shape(arrays[k])) for k in names),
        dtypes=tuple(str(np.asarray(arrays[k]).dtype) for k in names),
    )
    flat = [np.asarray(arrays[k], dtype=np.float64).ravel() for k in names]
    return layout, np.concatenate(flat) if flat else np.zeros(0)


def encrypt_arrays(
    arrays: dict[str, np.ndarray],
    *,
    bundle: KeyBundle,
    weight: float,
    settings: EncodeSettings,
    rng: np.random.Generator | None = None,
) -> Payload:
    """Clip, weight and encrypt a client's arrays into one tagged payload."""
    if not 0 < weight <= 1:
        raise ValueError(f"weight must be in (0, 1], got {weight}")
    layout, flat = flatten(arrays)
    clipped, n_clipped = clip(flat, settings.clip)
    y = clipped * weight
    extra: dict[str, object] = {"clip": settings.clip}
    if bundle.backend == "ckks":
        chunks = ckks.encrypt(y, bundle)
    else:
        packing = paillier.Packing.plan(
            key_bits=int(bundle.params["key-bits"]),
            bits=settings.bits,
            max_count=settings.max_count,
            packed=settings.packed,
        )
        u = quantize(y, bound=settings.clip, bits=settings.bits, rng=rng or np.random.default_rng())
        chunks = paillier.encrypt(u, bundle, packing, workers=settings.workers)
        extra.update(packing=packing.as_dict(), max_count=settings.max_count)
    header = Header(
        scheme=bundle.backend,
        params=bundle.params,
        fingerprint=bundle.fingerprint,
        layout=layout,
        weight=float(weight),
        clipped=n_clipped,
        extra=extra,
    )
    return Payload(header=header, chunks=tuple(chunks))


def check_compatible(payload: Payload, bundle: KeyBundle) -> None:
    """Refuse a payload made with another scheme, parameters or key generation."""
    h = payload.header
    if h.scheme != bundle.backend:
        raise PayloadError(f"payload scheme {h.scheme!r} but this party uses {bundle.backend!r}")
    if h.fingerprint != bundle.fingerprint:
        raise PayloadError(
            f"payload was encrypted under key {h.fingerprint}, this party holds key "
            f"{bundle.fingerprint} (server and clients use different key generations)"
        )
    if h.params != bundle.params:
        raise PayloadError(f"payload parameters {h.params} differ from the key's {bundle.params}")


def validate_payload(payload: Payload, *, bundle: KeyBundle) -> None:
    """Check tag, chunk count and every ciphertext's form before it meets others.

    Run on each client payload, so one truncated or garbage reply is refused on
    its own instead of failing the sum of a whole round.
    """
    check_compatible(payload, bundle)
    h = payload.header
    if bundle.backend == "ckks":
        per_ct = ckks.slots(bundle)
        ckks.add([list(payload.chunks)], bundle)  # deserializes every ciphertext
        n_cts = len(payload.chunks)
    else:
        per_ct = paillier.Packing.from_dict(h.extra["packing"]).per_ct
        n_cts = paillier.count_ciphertexts(list(payload.chunks), bundle)
    expected = -(-h.layout.size // per_ct)
    if n_cts != expected:
        raise PayloadError(f"payload holds {n_cts} ciphertexts, its layout needs {expected}")


def aggregate(payloads: list[Payload], *, bundle: KeyBundle) -> Payload:
    """Sum the ciphertexts and weights of several payloads; needs public material only."""
    if not payloads:
        raise ValueError("no payloads to aggregate")
    first = payloads[0].header
    for p in payloads:
        check_compatible(p, bundle)
        if p.header.layout != first.layout or p.header.extra != first.extra:
            raise PayloadError("payloads differ in layout or encoding; cannot add them")
    count = sum(p.header.count for p in payloads)
    max_count = first.extra.get("max_count")
    if max_count is not None and count > int(max_count):
        raise PayloadError(f"{count} contributions exceed the {max_count} the slots have room for")
    add = ckks.add if bundle.backend == "ckks" else paillier.add
    chunks = add([list(p.chunks) for p in payloads], bundle)
    header = replace(
        first,
        count=count,
        weight=sum(p.header.weight for p in payloads),
        clipped=sum(p.header.clipped for p in payloads),
    )
    return Payload(header=header, chunks=tuple(chunks))


def decrypt_arrays(
    payload: Payload, *, bundle: KeyBundle, workers: int = 1
) -> dict[str, np.ndarray]:
    """Decrypt a (summed) payload into the weighted mean of its contributions."""
    check_compatible(payload, bundle)
    h = payload.header
    size = h.layout.size
    if bundle.backend == "ckks":
        total = ckks.decrypt(list(payload.chunks), bundle, size)
    else:
        packing = paillier.Packing.from_dict(h.extra["packing"])
        sums = paillier.decrypt(list(payload.chunks), bundle, packing, size, workers=workers)
        if np.any(sums > np.uint64(h.count * (2**packing.bits - 1))):
            raise PayloadError("a slot exceeds its range: some contribution was out of range")
        total = dequantize_sum(sums, bound=float(h.extra["clip"]), bits=packing.bits, count=h.count)
    return unflatten(total / h.weight, h.layout)


def unflatten(values: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Inverse of ``flatten``: named arrays of the layout's shapes and dtypes."""
    out, offset = {}, 0
    for name, shape, dtype in zip(layout.names, layout.shapes, layout.dtypes, strict=True):
        n = int(np.prod(shape, dtype=np.int64))
        out[name] = values[offset : offset + n].reshape(shape).astype(dtype)
        offset += n
    return out


def encrypted_scores(
    payloads: list[Payload],
    *,
    bundle: KeyBundle,
    kinds: tuple[str, ...],
    reference: Payload | dict[str, np.ndarray],
) -> dict[str, list[bytes]]:
    """Per-client encrypted deviation scores for box-plot filtering (CKKS only).

    ``mean-distance`` scores each client against the plain mean of all
    clients' values, ``norm`` against ``reference`` (the global model of this
    round: a summed payload, or plaintext arrays in round 1). The server runs
    this with the evaluation keys and never decrypts; a key holder decrypts the
    returned scalars, each ``||u_i - c||^2 / d``.
    """
    if bundle.backend != "ckks":
        raise PayloadError(
            "encrypted scores need ciphertext multiplication; Paillier only adds ciphertexts"
        )
    for p in payloads:
        check_compatible(p, bundle)
    size = payloads[0].header.layout.size
    chunks = [list(p.chunks) for p in payloads]
    weights = [p.header.weight for p in payloads]
    out = {}
    for kind in kinds:
        if kind == "mean-distance":
            out[kind] = ckks.deviation_scores(chunks, weights, bundle, size)
        elif kind == "norm" and isinstance(reference, Payload):
            check_compatible(reference, bundle)
            out[kind] = ckks.deviation_scores(
                chunks, weights, bundle, size,
                center=list(reference.chunks), center_weight=reference.header.weight,
            )  # fmt: skip
        elif kind == "norm":  # plaintext round-1 model, flattened in the payloads' order
            _, flat = flatten({k: reference[k] for k in payloads[0].header.layout.names})
            out[kind] = ckks.deviation_scores(chunks, weights, bundle, size, center=flat)
        else:
            raise ValueError(f"score {kind!r} cannot be computed on ciphertexts")
    return out


def score_bound(clip_value: float) -> float:
    """Largest honest mean squared deviation: every value and center lie in [-clip, clip]."""
    return (2.0 * clip_value) ** 2
