"""CKKS through TenSEAL, with parameters for aggregation only.

Clients weight their update before encrypting (as NVIDIA FLARE does), so the
server only adds ciphertexts: no multiplicative level, no relinearization or
Galois keys. Symmetric (secret-key) encryption: the server needs no key at all
to add, only the public parameters. Defaults N = 8192, coefficient moduli
[60, 40], scale 2^40: 4096 values per ciphertext, about 32 bytes per value, and
2^19 headroom above the scale for sums of weighted values.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import tenseal as ts

from privacy.he.bundle import BundleError, KeyBundle
from privacy.he.payload import PayloadError

DEFAULTS: dict[str, Any] = {
    "poly-modulus-degree": 8192,
    "coeff-mod-bit-sizes": [60, 40],
    "scale-bits": 40,
}


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
    return KeyBundle(
        backend="ckks",
        params=p,
        public=ctx.serialize(save_secret_key=False),
        secret=ctx.serialize(save_secret_key=True),
    )


@lru_cache(maxsize=8)
def _context(data: bytes) -> ts.Context:
    return ts.context_from(data)


def context(bundle: KeyBundle, *, secret: bool) -> ts.Context:
    """The TenSEAL context of a bundle; ``secret`` asks for the one that decrypts."""
    data = bundle.require_secret("CKKS encryption/decryption") if secret else bundle.public
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


def _load(ctx: ts.Context, chunk: bytes, index: int) -> ts.CKKSVector:
    try:
        return ts.ckks_vector_from(ctx, chunk)
    except Exception as e:  # TenSEAL raises bare exceptions on bad bytes
        raise PayloadError(f"CKKS chunk {index} is not a valid ciphertext ({e})") from e


def add(chunk_lists: list[list[bytes]], bundle: KeyBundle) -> list[bytes]:
    """Element-wise sum of several clients' ciphertexts, with public material only."""
    ctx = context(bundle, secret=False)
    out = []
    for i, chunks in enumerate(zip(*chunk_lists, strict=True)):
        acc = _load(ctx, chunks[0], i)
        for chunk in chunks[1:]:
            acc += _load(ctx, chunk, i)
        out.append(acc.serialize())
    return out


def decrypt(chunks: list[bytes], bundle: KeyBundle, size: int) -> np.ndarray:
    """The first ``size`` plaintext values of a payload's ciphertexts."""
    ctx = context(bundle, secret=True)
    parts = [np.asarray(_load(ctx, c, i).decrypt(), dtype=np.float64) for i, c in enumerate(chunks)]
    values = np.concatenate(parts) if parts else np.zeros(0)
    if len(values) < size:
        raise PayloadError(f"payload holds {len(values)} values, layout needs {size}")
    return values[:size]
