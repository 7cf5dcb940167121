"""Server-keyed HE (encrypted-model training): clients update a model they cannot read.

The medical-data paper's arrangement, opposite to server-blind aggregation: the
server holds the key pair and sends the encrypted global model [[w]]; a client
applies its local training to [[w]] and returns [[w']] without ever seeing w;
the server decrypts, aggregates and re-encrypts. What a client computes on the
ciphertext is an affine map ``w' = M w + c`` whose plaintext ``M`` and ``c``
come from its own data (``app/encrypted_training.py``): with the Taylor-
approximated logistic loss, every SGD step is affine in ``w``, so K local steps
compose into one map and cost ONE ciphertext-plaintext multiplication per round.

- CKKS: the multiplicative depth is that one multiplication (coefficient
  moduli like ``60,40,60``: one level to rescale). Coordinate ``j`` of w is
  encrypted in its own ciphertext, repeated over the first ``d`` slots, so
  ``sum_j [[w_j]] * M[:, j]`` needs no rotations (no Galois keys), and clients
  need no key at all: ciphertext-plaintext products and sums take only the
  public parameters.
- Paillier (python-paillier): ``[[w_i']] = prod_j [[w_j]]^(M_ij) * [[c_i]]`` in
  fixed point. Each multiplication multiplies the plaintext scale by
  ``2^SCALE_BITS``; K encrypted steps in a row would grow it to ``2^(K+1)*bits``
  and, with the sums, toward phe's overflow bound (n/3): the "overflow" the
  paper's re-encryption addresses. One map per round and the server's decrypt/
  re-encrypt every round keep it at ``2^(2*SCALE_BITS)``; phe's decoder still
  refuses an overflowed value rather than returning garbage.

The reply's ciphertexts are re-randomized (Paillier ``obfuscate``), so an
eavesdropper cannot relate them to the model it saw go out.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from functools import lru_cache

import numpy as np

from flwr_privacy.extras import requires

with requires("he", "server-keyed HE (flwr_privacy.he.model)"):
    import tenseal as ts
    from phe import paillier as phe

from flwr_privacy.he import ckks
from flwr_privacy.he import paillier as pai
from flwr_privacy.he.bundle import KeyBundle
from flwr_privacy.he.codec import check_compatible, flatten, unflatten
from flwr_privacy.he.payload import Header, Payload, PayloadError

__all__ = [
    "CKKS_LEVELS",
    "MODE",
    "SCALE_BITS",
    "apply_affine",
    "check_params",
    "decrypt_model",
    "encrypt_model",
]

MODE = "server-keyed"
SCALE_BITS = 40  # Paillier fixed point: model and map entries are scaled by 2^40
CKKS_LEVELS = 1


def check_params(bundle: KeyBundle) -> None:
    """Refuse CKKS parameters without the one multiplicative level this mode needs."""
    if bundle.backend == "ckks" and len(bundle.params["coeff-mod-bit-sizes"]) < CKKS_LEVELS + 2:
        raise ValueError(
            "server-keyed CKKS needs one multiplicative level: coefficient moduli like "
            f"60,40,60 (he.coeff-mod-bit-sizes), not {bundle.params['coeff-mod-bit-sizes']}"
        )


def _public(bundle: KeyBundle) -> str:
    """What a client needs to compute on the ciphertexts: parameters / modulus, no key."""
    if bundle.backend == "paillier":
        raw = bundle.public
    else:
        raw = ckks.context(bundle, secret=False).serialize(
            save_public_key=False, save_secret_key=False,
            save_galois_keys=False, save_relin_keys=False,
        )  # fmt: skip
    return base64.b64encode(raw).decode()


def encrypt_model(arrays: dict[str, np.ndarray], bundle: KeyBundle) -> Payload:
    """[[w]] for the clients (server side: needs the secret key's bundle)."""
    check_params(bundle)
    layout, w = flatten(arrays)
    secret = bundle.require_secret("encrypting the global model")
    if bundle.backend == "ckks":
        ctx = ckks.context(bundle, secret=True)
        chunks = [ts.ckks_vector(ctx, [float(v)] * len(w)).serialize() for v in w]
    else:
        p, q = (int(x) for x in pai.secret_primes(secret))
        n = int(bundle.public.decode())
        ints = [int(v) % n for v in _fixed(w)]
        chunks = pai.to_chunks(pai.encrypt_block(n, p, q, ints, True), bundle)
    header = Header(scheme=bundle.backend, params=bundle.params, fingerprint=bundle.fingerprint,
                    layout=layout, extra={"mode": MODE, "public": _public(bundle),
                                          "scale-bits": SCALE_BITS})  # fmt: skip
    return Payload(header=header, chunks=tuple(chunks))


def _fixed(values: np.ndarray) -> list[int]:
    return [int(round(float(v) * 2**SCALE_BITS)) for v in values]


@lru_cache(maxsize=4)
def _ckks_context(public: str) -> ts.Context:
    ctx = ts.context_from(base64.b64decode(public))
    if ctx.is_private():
        raise PayloadError("the model's CKKS context holds a secret key; refusing it")
    return ctx


def _check_model(payload: Payload, size: int) -> None:
    h = payload.header
    if h.extra.get("mode") != MODE or "public" not in h.extra:
        raise PayloadError("not a server-keyed encrypted model (no public parameters)")
    if h.layout.size != size:
        raise PayloadError(
            f"the model has {h.layout.size} values; the local map is {size} x {size}"
        )


def _count(found: int, size: int) -> None:
    if found != size:
        raise PayloadError(f"expected {size} ciphertexts (one per model value), got {found}")


def apply_affine(payload: Payload, matrix: np.ndarray, offset: np.ndarray) -> Payload:
    """[[M w + c]] from [[w]] (client side: public parameters only, no key)."""
    d = len(offset)
    if matrix.shape != (d, d):
        raise ValueError(f"local map is {matrix.shape}, offset has {d} values")
    _check_model(payload, d)
    public = payload.header.extra["public"]
    if payload.header.scheme == "ckks":
        ctx = _ckks_context(public)
        _count(len(payload.chunks), d)
        acc = None
        for j, chunk in enumerate(payload.chunks):
            term = ckks.load_vector(ctx, chunk, j) * matrix[:, j].tolist()
            acc = term if acc is None else acc + term
        chunks = [(acc + offset.tolist()).serialize()]
        scale = 0
    else:
        pub = phe.PaillierPublicKey(int(base64.b64decode(public).decode()))
        shell = KeyBundle(backend="paillier", params=payload.header.params,
                          public=str(pub.n).encode())  # fmt: skip
        cts = pai.from_chunks(list(payload.chunks), shell)
        _count(len(cts), d)
        enc = [phe.EncryptedNumber(pub, c) for c in cts]
        m, c = np.array(_fixed(matrix.ravel()), dtype=object).reshape(d, d), _fixed(offset)
        out = []
        for i in range(d):
            acc = enc[0] * int(m[i, 0])
            for j in range(1, d):
                acc = acc + enc[j] * int(m[i, j])
            acc = acc + c[i] * 2**SCALE_BITS  # c at the product's scale, 2^(2 * SCALE_BITS)
            acc.obfuscate()
            out.append(acc.ciphertext(be_secure=False))
        chunks = pai.to_chunks(out, shell)
        scale = 2 * SCALE_BITS
    extra = {"mode": MODE, "scale-bits": scale, "stage": "update"}
    return Payload(header=replace(payload.header, extra=extra), chunks=tuple(chunks))


def decrypt_model(payload: Payload, bundle: KeyBundle) -> dict[str, np.ndarray]:
    """A client's [[w']] as named arrays (server side); refuses what it cannot trust."""
    check_compatible(payload, bundle)
    h = payload.header
    if h.extra.get("mode") != MODE or h.extra.get("stage") != "update":
        raise PayloadError("not a server-keyed model update")
    size = h.layout.size
    if bundle.backend == "ckks":
        if len(payload.chunks) != 1:  # the client's sum: one ciphertext, d slots
            raise PayloadError(f"expected 1 CKKS ciphertext, got {len(payload.chunks)}")
        values = ckks.decrypt(list(payload.chunks), bundle, size)
    else:
        priv = pai.private_key(bundle)
        cts = pai.from_chunks(list(payload.chunks), bundle)
        _count(len(cts), size)
        try:
            ints = [priv.decrypt(phe.EncryptedNumber(priv.public_key, c)) for c in cts]
        except OverflowError as e:
            raise PayloadError(f"a decrypted value overflowed the plaintext space ({e})") from e
        values = np.array([float(v) for v in ints]) / 2.0 ** int(h.extra["scale-bits"])
    if not np.all(np.isfinite(values)):
        raise PayloadError("the decrypted update holds NaN or infinite values")
    return unflatten(values, h.layout)
