"""The one small HE interface both sides use: encrypt, aggregate, decrypt named arrays.

Clients weight their update before encrypting (weight w <= 1), the server adds
ciphertexts and weights, and a key holder divides the decrypted sum by the
total weight: the weighted FedAvg mean, computed without the server reading
any update.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import numpy as np

from flwr_privacy.he.backend import EncodeSettings, ScoreQuery, backend_for
from flwr_privacy.he.bundle import KeyBundle
from flwr_privacy.he.check import check_compatible
from flwr_privacy.he.payload import Header, Layout, Payload, PayloadError
from flwr_privacy.he.quantize import clip

__all__ = [  # EncodeSettings re-exported: the settings live with the backend protocol
    "EncodeSettings",
    "aggregate",
    "decrypt_arrays",
    "encrypt_arrays",
    "encrypted_scores",
    "flatten",
    "layout_of",
    "score_bound",
    "unflatten",
]


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
    backend = backend_for(bundle.backend)
    chunks = backend.encrypt(y, bundle, settings, rng or np.random.default_rng())
    extra = {"clip": float(settings.clip), **backend.encoding(bundle, settings)}
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
    try:
        chunks = backend_for(bundle.backend).add([list(p.chunks) for p in payloads], bundle)
    except PayloadError:
        raise
    except Exception as e:  # the scheme's library refused the sum: never crash the caller
        raise PayloadError(f"cannot add the ciphertexts ({type(e).__name__}: {e})") from e
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
    total = backend_for(bundle.backend).decrypt(list(payload.chunks), bundle, h, workers=workers)
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
    backend = backend_for(bundle.backend)
    if not backend.multiplies:
        raise PayloadError(
            "encrypted scores need ciphertext multiplication; "
            f"{bundle.backend.capitalize()} only adds ciphertexts"
        )
    for p in payloads:
        check_compatible(p, bundle)
    size = payloads[0].header.layout.size
    chunks = [list(p.chunks) for p in payloads]
    weights = [p.header.weight for p in payloads]
    out = {}
    for kind in kinds:
        if kind == "mean-distance":
            out[kind] = backend.scores(ScoreQuery(chunks, weights, size), bundle)
        elif kind == "norm" and isinstance(reference, Payload):
            check_compatible(reference, bundle)
            query = ScoreQuery(chunks, weights, size, center=list(reference.chunks),
                               center_weight=reference.header.weight)  # fmt: skip
            out[kind] = backend.scores(query, bundle)
        elif kind == "norm":  # plaintext round-1 model, flattened in the payloads' order
            plain = cast(dict[str, np.ndarray], reference)  # not a Payload: the branch above
            _, flat = flatten({k: plain[k] for k in payloads[0].header.layout.names})
            out[kind] = backend.scores(ScoreQuery(chunks, weights, size, center=flat), bundle)
        else:
            raise ValueError(f"score {kind!r} cannot be computed on ciphertexts")
    return out


def score_bound(clip_value: float) -> float:
    """Largest honest mean squared deviation: every value and center lie in [-clip, clip]."""
    return (2.0 * clip_value) ** 2
