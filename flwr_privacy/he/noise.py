"""Server-side DP noise on an encrypted sum: sampled by OpenDP, encrypted under the public key.

The distributed-ML paper's mechanism: the server, which holds public key material only,
adds ``Enc(noise)`` to the encrypted sum of the clients' clipped updates, so whoever
decrypts sees ``sum + noise`` and nobody but the server ever sees the noise alone.

- Paillier: the noise is drawn in units of the clients' quantization step (OpenDP's exact
  discrete Gaussian over ``i64``, Canonne-Kamath-Steinke 2020) and encoded like ``slots``
  (even) extra contributions of the round: offset by ``slots * clip``, packed into the
  clients' slot layout, each plaintext encrypted with phe's ``raw_encrypt`` (fresh
  ``r^n``, r from ``random.SystemRandom``). The decrypted sum then decodes, exactly as
  the clients' sum does, to ``sum + noise``; the header counts ``n + slots``
  contributions, and ``max_count`` must have room for them (headroom bits).
- CKKS: OpenDP's Gaussian over floats (granularity 2^-40, below both the float32 model
  resolution and the CKKS error), encrypted with the public key of an *asymmetric* key
  generation (``keygen_public``). The default CKKS keys are symmetric: their server
  bundle cannot encrypt, and is refused with the fix.

Why OpenDP: a maintained sampler that draws from the OS CSPRNG and is exact (no
floating-point tails to attack, Mironov 2012); ~0.8 s per 30K values on one core.
Importing this module enables OpenDP's ``contrib`` feature flag, which its Gaussian needs.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from flwr_privacy.extras import requires
from flwr_privacy.he.backend import backend_for
from flwr_privacy.he.bundle import BundleError, KeyBundle
from flwr_privacy.he.payload import Payload, PayloadError
from flwr_privacy.he.quantize import step

TAIL = 12.0  # noise values beyond 12 std (probability 3.6e-33 each) are redrawn: see ``slots``
FLOAT_GRANULARITY = -40  # OpenDP ``k``: float noise on a 2^-40 grid
MAX_REDRAWS = 8


def _opendp() -> Any:
    with requires("dp", "central DP noise (flwr_privacy.he.noise)"):
        import opendp.prelude as dp  # heavy: only a server adding noise loads it

    dp.enable_features("contrib")  # OpenDP's Gaussian sits behind this flag
    return dp


def gaussian(size: int, std: float) -> np.ndarray:
    """``size`` Gaussian values of standard deviation ``std`` (OpenDP, CSPRNG, float64)."""
    if size == 0 or std == 0:
        return np.zeros(size)
    dp = _opendp()
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=size), dp.l2_distance(T=float)
    meas = dp.m.make_gaussian(*space, scale=float(std), k=FLOAT_GRANULARITY)
    return np.asarray(meas([0.0] * size), dtype=np.float64)


def discrete_gaussian(size: int, std: float) -> np.ndarray:
    """``size`` discrete Gaussian integers of scale ``std`` (OpenDP, CSPRNG, int64)."""
    if size == 0 or std == 0:
        return np.zeros(size, dtype=np.int64)
    dp = _opendp()
    space = dp.vector_domain(dp.atom_domain(T="i64"), size=size), dp.l2_distance(T="i64")
    meas = dp.m.make_gaussian(*space, scale=float(std))
    return np.asarray(meas([0] * size), dtype=np.int64)


def slots(backend: str, *, std: float, clip: float) -> int:
    """Contributions' worth of range the noise takes in a Paillier sum (0 for CKKS).

    Even (the zero of ``slots`` contributions then sits on an integer level) and
    wide enough for ``TAIL`` standard deviations: ``slots * clip >= TAIL * std``.
    A value beyond that is redrawn, which moves the noise distribution by at most
    ``size * 3.6e-33`` in total variation (negligible next to any delta).
    """
    if backend != "paillier" or std == 0:
        return 0
    return 2 * max(1, math.ceil(TAIL * std / (2 * clip)))


def rounding_sensitivity(backend: str, *, clip: float, bits: int, size: int) -> float:
    """How far a client's stochastic rounding can move its L2 norm (Paillier; CKKS: 0).

    Each coordinate of a quantized update is off by less than one step; against a
    neighbour's rounding, less than two: ``2 * step * sqrt(size)``.
    """
    if backend != "paillier":
        return 0.0
    return 2.0 * step(clip, bits) * math.sqrt(size)


def _bounded(draw: Any, size: int, std: float, limit: float) -> np.ndarray:
    for _ in range(MAX_REDRAWS):
        values = draw(size, std)
        if not np.any(np.abs(values) > limit):
            return np.asarray(values)
    raise RuntimeError(f"noise exceeded {TAIL} std {MAX_REDRAWS} times in a row: sampler broken?")


def add_noise(summed: Payload, *, bundle: KeyBundle, std: float, noise_slots: int) -> Payload:
    """``summed`` plus the encryption of fresh Gaussian noise of ``std`` per value.

    ``std`` is in the units of the decrypted sum (before the key holder divides by
    the total weight). Needs public material only; ``noise_slots`` is what ``slots``
    gave when the round's ``max_count`` was set.
    """
    h = summed.header
    if h.scheme != bundle.backend or h.fingerprint != bundle.fingerprint:
        raise PayloadError("the sum was made under another key than the server's")
    if bundle.backend == "paillier":
        noise = _paillier_noise(summed, bundle, std, noise_slots)
    elif bundle.backend == "ckks":
        noise = _ckks_noise(h.layout.size, bundle, std)
    else:
        raise PayloadError(f"no encrypted noise for HE backend {bundle.backend!r}")
    chunks = backend_for(bundle.backend).add([list(summed.chunks), noise], bundle)
    return Payload(header=replace(h, count=h.count + noise_slots), chunks=tuple(chunks))


def _paillier_noise(summed: Payload, bundle: KeyBundle, std: float, k: int) -> list[bytes]:
    with requires("he", "central DP under Paillier (flwr_privacy.he.noise)"):
        from phe import paillier as phe

    from flwr_privacy.he import paillier

    h = summed.header
    packing = paillier.Packing.from_dict(h.extra["packing"])
    levels = 2**packing.bits - 1
    if k < 2 or k % 2 or h.count + k > int(h.extra["max_count"]):
        raise PayloadError(
            f"{k} noise slots do not fit: the sum holds {h.count} of max_count "
            f"{h.extra['max_count']} (reserve them before the round: slots())"
        )
    unit = step(float(h.extra["clip"]), packing.bits)
    noise = _bounded(discrete_gaussian, h.layout.size, std / unit, k // 2 * levels)
    u = (noise + k // 2 * levels).astype(np.uint64)  # k contributions' zero, as the decoder has it
    public = phe.PaillierPublicKey(int(bundle.public.decode()))
    cts = [public.raw_encrypt(m) for m in paillier.pack(u, packing)]
    return paillier.to_chunks(cts, bundle)


def _ckks_noise(size: int, bundle: KeyBundle, std: float) -> list[bytes]:
    with requires("he", "central DP under CKKS (flwr_privacy.he.noise)"):
        import tenseal as ts

    from flwr_privacy.he import ckks

    ctx = ckks.context(bundle, secret=False)
    if not can_encrypt(bundle):
        raise BundleError(
            f"CKKS bundle {bundle.fingerprint} has no public key (symmetric keys): the server "
            "cannot encrypt its noise; deal keys with flwr_privacy.he.noise.keygen_public"
        )
    noise, n = gaussian(size, std), ckks.slots(bundle)
    return [ts.ckks_vector(ctx, noise[i : i + n].tolist()).serialize() for i in range(0, size, n)]


def can_encrypt(bundle: KeyBundle) -> bool:
    """Whether the public part of ``bundle`` can encrypt (Paillier: always; CKKS: asymmetric)."""
    if bundle.backend != "ckks":
        return True
    from flwr_privacy.he import ckks

    ctx = ckks.context(bundle, secret=False)
    try:
        return bool(ctx.has_public_key())
    except ValueError:  # TenSEAL: "not supported for symmetric encryption"
        return False


def keygen_public(params: dict[str, Any] | None = None) -> KeyBundle:
    """A CKKS client bundle whose public part holds a public key (asymmetric TenSEAL context).

    ``ckks.keygen`` with ``ENCRYPTION_TYPE.ASYMMETRIC``: the server bundle can then
    encrypt (server-side noise); clients encrypt with the public key too (same size,
    slightly more encryption noise). ``params`` gains ``"public-key": True``.
    """
    with requires("he", "central DP under CKKS (flwr_privacy.he.noise)"):
        import tenseal as ts

    from flwr_privacy.he import ckks

    p = {**ckks.DEFAULTS, **(params or {}), "public-key": True}
    if p["eval-keys"]:
        raise BundleError("keygen_public makes aggregation keys only (no eval-keys)")
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=int(p["poly-modulus-degree"]),
        coeff_mod_bit_sizes=[int(b) for b in p["coeff-mod-bit-sizes"]],
        encryption_type=ts.ENCRYPTION_TYPE.ASYMMETRIC,
    )
    ctx.global_scale = 2 ** int(p["scale-bits"])
    return KeyBundle(
        backend="ckks",
        params=p,
        public=ctx.serialize(save_secret_key=False, save_galois_keys=False),
        secret=ctx.serialize(save_secret_key=True, save_galois_keys=False),
    )
