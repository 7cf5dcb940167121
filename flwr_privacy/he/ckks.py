"""CKKS through TenSEAL, with parameters for aggregation only.

Clients weight their update before encrypting (as NVIDIA FLARE does), so the
server only adds ciphertexts: no multiplicative level, no relinearization or
Galois keys. Symmetric (secret-key) encryption: the server needs no key at all
to add, only the public parameters. Defaults N = 8192, coefficient moduli
[60, 40], scale 2^40: 4096 values per ciphertext, about 32 bytes per value, and
2^19 headroom above the scale for sums of weighted values.

Encrypted box-plot filtering is a parameter choice on top: ``eval-keys`` adds
relinearization and Galois keys to the server bundle and needs two
multiplicative levels (e.g. moduli [60, 40, 40, 60]) for ``deviation_scores``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from flwr_privacy.extras import requires

with requires("he", "CKKS (flwr_privacy.he.ckks)"):
    import tenseal as ts

from flwr_privacy.he.backend import EncodeSettings, ScoreQuery
from flwr_privacy.he.bundle import BundleError, KeyBundle
from flwr_privacy.he.payload import Header, PayloadError

__all__ = [
    "BACKEND",
    "Ckks",
    "DEFAULTS",
    "SCORE_LEVELS",
    "add",
    "check_chunks",
    "check_vector",
    "context",
    "decrypt",
    "decrypt_scalars",
    "deviation_scores",
    "encrypt",
    "keygen",
    "load_vector",
    "slots",
]

DEFAULTS: dict[str, Any] = {
    "poly-modulus-degree": 8192,
    "coeff-mod-bit-sizes": [60, 40],
    "scale-bits": 40,
    "eval-keys": False,
}
SCORE_LEVELS = 2  # one plaintext-scalar multiplication, one squaring


def keygen(params: dict[str, Any] | None = None) -> KeyBundle:
    """A fresh client bundle (secret key included)."""
    p = {**DEFAULTS, **(params or {})}
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=int(p["poly-modulus-degree"]),
        coeff_mod_bit_sizes=[int(b) for b in p["coeff-mod-bit-sizes"]],
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    ctx.global_scale = 2 ** int(p["scale-bits"])
    # TenSEAL makes relinearization keys with every context: they stay in ``public``
    # (derived from the secret key, they make the fingerprint unique per generation).
    no_eval = {"save_galois_keys": False}
    evaluation = None
    if p["eval-keys"]:
        if len(p["coeff-mod-bit-sizes"]) < SCORE_LEVELS + 2:
            raise BundleError(
                f"eval-keys needs {SCORE_LEVELS} multiplicative levels: coefficient moduli "
                f"like 60,40,40,60, not {p['coeff-mod-bit-sizes']}"
            )
        ctx.generate_galois_keys()
        evaluation = ctx.serialize(save_secret_key=False)
    return KeyBundle(
        backend="ckks",
        params=p,
        public=ctx.serialize(save_secret_key=False, **no_eval),
        secret=ctx.serialize(save_secret_key=True, **no_eval),
        evaluation=evaluation,
    )


@lru_cache(maxsize=8)
def _context(data: bytes) -> ts.Context:
    return ts.context_from(data)


def context(bundle: KeyBundle, *, secret: bool, evaluation: bool = False) -> ts.Context:
    """The TenSEAL context of a bundle.

    ``secret`` asks for the one that decrypts; ``evaluation`` for the server's
    one with relinearization and Galois keys.
    """
    if secret:
        data = bundle.require_secret("CKKS encryption/decryption")
    elif evaluation:
        if bundle.evaluation is None:
            raise BundleError(
                f"CKKS bundle {bundle.fingerprint} has no evaluation keys; generate the keys "
                "with eval-keys (python -m app.keys generate --eval-keys) for encrypted filtering"
            )
        data = bundle.evaluation
    else:
        data = bundle.public
    ctx = _context(data)
    ctx.global_scale = 2 ** int(bundle.params["scale-bits"])
    if not secret and ctx.is_private():
        raise BundleError("the public part of this CKKS bundle holds a secret key")
    return ctx


def slots(bundle: KeyBundle) -> int:
    return int(bundle.params["poly-modulus-degree"]) // 2


def encrypt(values: np.ndarray, bundle: KeyBundle) -> list[bytes]:
    """One serialized ciphertext per ``slots`` values (the last one zero-padded)."""
    ctx, n = context(bundle, secret=True), slots(bundle)
    return [ts.ckks_vector(ctx, values[i : i + n]).serialize() for i in range(0, len(values), n)]


def load_vector(ctx: ts.Context, chunk: bytes, index: int) -> ts.CKKSVector:
    try:
        return ts.ckks_vector_from(ctx, chunk)
    except Exception as e:  # TenSEAL raises bare exceptions on bad bytes
        raise PayloadError(f"CKKS chunk {index} is not a valid ciphertext ({e})") from e


def check_vector(vector: ts.CKKSVector, bundle: KeyBundle, index: int, values: int) -> None:
    """Refuse a ciphertext a fresh encryption of ``values`` values would not be.

    One SEAL ciphertext of two polynomials at the top level and the bundle's
    scale: anything else (a rescaled, multiplied or resized vector) could not be
    added to the other clients' ciphertexts and would fail the whole round.
    """
    parts = vector.ciphertext()
    levels = len(bundle.params["coeff-mod-bit-sizes"]) - 1
    fresh = len(parts) == 1 and (
        parts[0].size() == 2
        and parts[0].coeff_modulus_size() == levels
        and parts[0].poly_modulus_degree() == int(bundle.params["poly-modulus-degree"])
        and parts[0].scale == 2.0 ** int(bundle.params["scale-bits"])
        and parts[0].is_ntt_form()
        and not parts[0].is_transparent()
    )
    if not fresh:
        raise PayloadError(f"CKKS chunk {index} is not a fresh ciphertext of these parameters")
    if vector.size() != values:
        raise PayloadError(f"CKKS chunk {index} holds {vector.size()} values, not {values}")


def check_chunks(chunks: list[bytes], bundle: KeyBundle, size: int) -> None:
    """Every chunk a well-formed ciphertext of ``slots`` values (the last: the rest)."""
    n = slots(bundle)
    expected = -(-size // n)
    if len(chunks) != expected:
        raise PayloadError(f"payload holds {len(chunks)} ciphertexts, its layout needs {expected}")
    ctx = context(bundle, secret=False)
    for i, chunk in enumerate(chunks):
        check_vector(load_vector(ctx, chunk, i), bundle, i, min(n, size - i * n))


def add(chunk_lists: list[list[bytes]], bundle: KeyBundle) -> list[bytes]:
    """Element-wise sum of several clients' ciphertexts, with public material only."""
    ctx = context(bundle, secret=False)
    out = []
    for i, chunks in enumerate(zip(*chunk_lists, strict=True)):
        acc = load_vector(ctx, chunks[0], i)
        for chunk in chunks[1:]:
            acc += load_vector(ctx, chunk, i)
        out.append(acc.serialize())
    return out


def decrypt(chunks: list[bytes], bundle: KeyBundle, size: int) -> np.ndarray:
    """The first ``size`` plaintext values of a payload's ciphertexts."""
    ctx = context(bundle, secret=True)
    parts = [
        np.asarray(load_vector(ctx, c, i).decrypt(), dtype=np.float64) for i, c in enumerate(chunks)
    ]
    values = np.concatenate(parts) if parts else np.zeros(0)
    if len(values) < size:
        raise PayloadError(f"payload holds {len(values)} values, layout needs {size}")
    return values[:size]


def _weighted_sum(vectors: list[list[ts.CKKSVector]], factors: list[float]) -> list[ts.CKKSVector]:
    """Chunk-wise sum over clients of ``factor_i * vector_i`` (one level)."""
    out = [v * factors[0] for v in vectors[0]]
    for vs, f in zip(vectors[1:], factors[1:], strict=True):
        out = [acc + v * f for acc, v in zip(out, vs, strict=True)]
    return out


def deviation_scores(query: ScoreQuery, bundle: KeyBundle) -> list[bytes]:
    """Encrypted mean squared deviation of each client's values from a center.

    Client ``i`` sent ``Enc(w_i * u_i)``. The result for ``i`` is one encrypted
    scalar ``||u_i - c||^2 / size``, where ``c`` is the plain mean of the
    ``u_j`` (``center`` None), a plaintext vector, or an encrypted weighted sum
    divided by ``center_weight`` (the previous global model). Needs the server
    bundle's evaluation keys; nothing is decrypted here.
    """
    ctx = context(bundle, secret=False, evaluation=True)
    weights, size, center = query.weights, query.size, query.center
    vectors = [
        [load_vector(ctx, c, j) for j, c in enumerate(chunks)] for chunks in query.chunk_lists
    ]
    n, scale = len(vectors), 1.0 / float(np.sqrt(max(size, 1)))
    if center is None:
        ref = _weighted_sum(vectors, [scale / (n * w) for w in weights])
    elif isinstance(center, np.ndarray):
        slot = slots(bundle)
        ref = [(center[i : i + slot] * scale).tolist() for i in range(0, size, slot)]
    else:
        ref = [load_vector(ctx, c, j) * (scale / query.center_weight) for j, c in enumerate(center)]
    scores = []
    for vs, w in zip(vectors, weights, strict=True):
        total: Any = None  # a tenseal CKKSVector (untyped) from the first part on
        for v, r in zip(vs, ref, strict=True):
            diff = v * (scale / w) - r
            part = diff.square().sum()
            total = part if total is None else total + part
        scores.append(total.serialize())
    return scores


def decrypt_scalars(chunks: list[bytes], bundle: KeyBundle) -> list[float]:
    """Decrypt score ciphertexts; each must hold exactly one value.

    A client answering the server's score query returns only these scalars,
    never a longer vector (see docs/guides/robust.md, encrypted box plot).
    """
    ctx = context(bundle, secret=True)
    out = []
    for i, chunk in enumerate(chunks):
        vector = load_vector(ctx, chunk, i)
        if vector.size() != 1:
            raise PayloadError(f"score {i} holds {vector.size()} values, not one scalar")
        out.append(float(vector.decrypt()[0]))
    return out


class Ckks:
    """The CKKS backend (TenSEAL): adds and multiplies ciphertexts."""

    name = "ckks"
    multiplies = True

    def keygen(self, params: dict[str, Any] | None = None) -> KeyBundle:
        return keygen(params)

    def encoding(self, bundle: KeyBundle, settings: EncodeSettings) -> dict[str, Any]:
        return {}

    def encrypt(self, values: np.ndarray, bundle: KeyBundle, settings: EncodeSettings,
                rng: np.random.Generator) -> list[bytes]:  # fmt: skip
        return encrypt(values, bundle)

    def check_chunks(self, chunks: list[bytes], bundle: KeyBundle, header: Header) -> None:
        check_chunks(chunks, bundle, header.layout.size)

    def add(self, chunk_lists: list[list[bytes]], bundle: KeyBundle) -> list[bytes]:
        return add(chunk_lists, bundle)

    def decrypt(
        self, chunks: list[bytes], bundle: KeyBundle, header: Header, *, workers: int = 1
    ) -> np.ndarray:
        return decrypt(chunks, bundle, header.layout.size)

    def scores(self, query: ScoreQuery, bundle: KeyBundle) -> list[bytes]:
        return deviation_scores(query, bundle)


BACKEND = Ckks()
