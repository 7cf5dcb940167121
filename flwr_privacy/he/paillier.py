"""Paillier through python-paillier (phe) with gmpy2, packed in the style of BatchCrypt.

Values arrive as unsigned ``bits``-bit integers (see ``quantize``). ``packed``
puts ``per_ct`` of them in one plaintext, each in a slot of ``slot_bits`` bits
whose headroom holds the sum over every client of a round, so adding
ciphertexts (one modular multiplication) adds ``per_ct`` values and no slot can
carry into its neighbour. ``naive`` (one value per ciphertext, phe's standard
encryption) is kept only as the benchmark baseline.

The secret-key holder encrypts with the CRT: r^n mod n^2 from its parts mod
p^2 and q^2 (phe provides the key pair, raw encryption and decryption).
"""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing import get_context
from typing import Any

import numpy as np

from flwr_privacy.extras import requires

with requires("he", "Paillier (flwr_privacy.he.paillier)"):
    import gmpy2
    from phe import paillier

from flwr_privacy.he.backend import EncodeSettings, ScoreQuery
from flwr_privacy.he.bundle import KeyBundle
from flwr_privacy.he.payload import Header, PayloadError
from flwr_privacy.he.quantize import dequantize_sum, headroom_bits, quantize

DEFAULTS: dict[str, Any] = {"key-bits": 2048}
CTS_PER_CHUNK = 1024
PARALLEL_MIN_CTS = 256  # below this a process pool costs more than it saves


def keygen(params: dict[str, Any] | None = None) -> KeyBundle:
    p = {**DEFAULTS, **(params or {})}
    pub, priv = paillier.generate_paillier_keypair(n_length=int(p["key-bits"]))
    return KeyBundle(
        backend="paillier",
        params=p,
        public=str(pub.n).encode(),
        secret=json.dumps({"p": str(priv.p), "q": str(priv.q)}).encode(),
    )


@lru_cache(maxsize=8)
def _public(public: bytes) -> paillier.PaillierPublicKey:
    return paillier.PaillierPublicKey(int(public.decode()))


def secret_primes(secret: bytes) -> tuple[int, int]:
    """p and q from a bundle's secret part."""
    raw = json.loads(secret.decode())
    return int(raw["p"]), int(raw["q"])


@lru_cache(maxsize=8)
def _private(public: bytes, secret: bytes) -> paillier.PaillierPrivateKey:
    return paillier.PaillierPrivateKey(_public(public), *secret_primes(secret))


def private_key(bundle: KeyBundle) -> paillier.PaillierPrivateKey:
    """phe's private key of a bundle that holds the secret."""
    return _private(bundle.public, bundle.require_secret("Paillier decryption"))


@dataclass(frozen=True)
class Packing:
    """How integers sit in plaintexts: ``per_ct`` slots of ``slot_bits`` bits."""

    bits: int
    slot_bits: int
    per_ct: int
    packed: bool

    @classmethod
    def plan(cls, *, key_bits: int, bits: int, max_count: int, packed: bool = True) -> Packing:
        slot_bits = bits + headroom_bits(max_count)
        if not packed:
            return cls(bits, slot_bits, 1, False)
        per_ct = (key_bits - 1) // slot_bits  # keep every packed plaintext below n
        if per_ct < 1:
            raise ValueError(f"a {slot_bits}-bit slot does not fit a {key_bits}-bit key")
        return cls(bits, slot_bits, per_ct, True)

    def as_dict(self) -> dict[str, Any]:
        """Header fields: ``bits``, ``slot-bits``, ``per-ct``, ``packed``."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Packing:
        return cls(int(raw["bits"]), int(raw["slot-bits"]), int(raw["per-ct"]), bool(raw["packed"]))


def pack(u: np.ndarray, packing: Packing) -> list[int]:
    """Little-endian slots: value j of a group sits at bit j * slot_bits."""
    k, s = packing.per_ct, packing.slot_bits
    if k == 1:
        return [int(v) for v in u]
    padded = np.zeros(-(-len(u) // k) * k, dtype=np.uint64)
    padded[: len(u)] = u
    bits = ((padded[:, None] >> np.arange(s, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    rows = bits.reshape(-1, k * s)
    return [int.from_bytes(np.packbits(r, bitorder="little").tobytes(), "little") for r in rows]


def unpack(plaintexts: list[int], packing: Packing, size: int) -> np.ndarray:
    """Inverse of ``pack`` for sums: slots are ``slot_bits`` wide, values < 2^63."""
    k, s = packing.per_ct, packing.slot_bits
    if k == 1:
        return np.array(plaintexts[:size], dtype=np.uint64)
    nbytes = -(-(k * s) // 8)
    raw = b"".join(int(m).to_bytes(nbytes, "little") for m in plaintexts)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    slot_bits = bits.reshape(len(plaintexts), nbytes * 8)[:, : k * s].reshape(-1, s)
    weights = np.uint64(1) << np.arange(s, dtype=np.uint64)
    return (slot_bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)[:size]


def encrypt_block(n: int, p: int, q: int, plaintexts: list[int], crt: bool) -> list[int]:
    """Paillier encryption c = (1 + n m) r^n mod n^2, r^n by CRT when p, q are known."""
    pub = paillier.PaillierPublicKey(n)
    if not crt:
        return [pub.encrypt(m).ciphertext(be_secure=True) for m in plaintexts]
    n_, nsq = gmpy2.mpz(n), gmpy2.mpz(n) * n
    p2, q2 = gmpy2.mpz(p) ** 2, gmpy2.mpz(q) ** 2
    q2_inv = gmpy2.invert(q2, p2)
    out = []
    for m in plaintexts:
        r = gmpy2.mpz(secrets.randbelow(n - 1) + 1)
        rp, rq = gmpy2.powmod(r, n_, p2), gmpy2.powmod(r, n_, q2)
        obfuscator = rq + q2 * (((rp - rq) * q2_inv) % p2)
        out.append(int((pub.raw_encrypt(m, r_value=1) * obfuscator) % nsq))
    return out


def _map_blocks(fn: Any, blocks: list[Any], workers: int) -> list[Any]:
    if workers <= 1 or len(blocks) <= 1:
        return [fn(*b) for b in blocks]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*blocks, strict=True)))


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    size = -(-len(items) // max(parts, 1))
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


def _width(bundle: KeyBundle) -> int:
    n = int(bundle.public.decode())
    return ((n * n).bit_length() + 7) // 8


def to_chunks(cts: list[int], bundle: KeyBundle) -> list[bytes]:
    width = _width(bundle)
    return [
        b"".join(c.to_bytes(width, "big") for c in cts[i : i + CTS_PER_CHUNK])
        for i in range(0, len(cts), CTS_PER_CHUNK)
    ]


def from_chunks(chunks: list[bytes], bundle: KeyBundle) -> list[int]:
    width, nsq = _width(bundle), _public(bundle.public).nsquare
    cts = []
    for i, chunk in enumerate(chunks):
        if len(chunk) % width:
            raise PayloadError(
                f"Paillier chunk {i} has {len(chunk)} bytes, not a multiple of {width}"
            )
        for j in range(0, len(chunk), width):
            c = int.from_bytes(chunk[j : j + width], "big")
            if not 0 < c < nsq:
                raise PayloadError(f"Paillier chunk {i} holds a value outside Z*_(n^2)")
            cts.append(c)
    return cts


def count_ciphertexts(chunks: list[bytes], bundle: KeyBundle) -> int:
    """Number of well-formed ciphertexts in the chunks (raises on a malformed one)."""
    return len(from_chunks(chunks, bundle))


def check_chunks(chunks: list[bytes], bundle: KeyBundle, size: int, packing: Packing) -> None:
    """Exactly the chunks ``to_chunks`` makes for ``size`` values: full ones, then the rest."""
    n_cts = -(-size // packing.per_ct)
    full = CTS_PER_CHUNK * _width(bundle)
    expected = [full] * (n_cts // CTS_PER_CHUNK)
    if n_cts % CTS_PER_CHUNK:
        expected.append((n_cts % CTS_PER_CHUNK) * _width(bundle))
    got = [len(c) for c in chunks]
    if got != expected:
        raise PayloadError(
            f"payload chunks hold {sum(got)} bytes in {len(got)} chunks; its layout needs "
            f"{n_cts} ciphertexts of {_width(bundle)} bytes in {len(expected)} chunks"
        )
    from_chunks(chunks, bundle)  # every ciphertext in Z*_(n^2)


def encrypt(u: np.ndarray, bundle: KeyBundle, packing: Packing, *, workers: int = 1) -> list[bytes]:
    """Encrypt quantized integers (client side; packed mode uses the secret key's CRT)."""
    priv = _private(bundle.public, bundle.require_secret("Paillier encryption"))
    plaintexts = pack(u, packing)
    n_workers = workers if len(plaintexts) >= PARALLEL_MIN_CTS else 1
    blocks = [
        (priv.public_key.n, priv.p, priv.q, b, packing.packed)
        for b in _split(plaintexts, n_workers)
    ]
    cts = [c for block in _map_blocks(encrypt_block, blocks, n_workers) for c in block]
    return to_chunks(cts, bundle)


def add(chunk_lists: list[list[bytes]], bundle: KeyBundle) -> list[bytes]:
    """Sum of several clients' ciphertexts: one modular multiplication per ciphertext."""
    nsq = gmpy2.mpz(_public(bundle.public).nsquare)
    acc = [gmpy2.mpz(c) for c in from_chunks(chunk_lists[0], bundle)]
    for chunks in chunk_lists[1:]:
        other = from_chunks(chunks, bundle)
        if len(other) != len(acc):
            raise PayloadError(f"payload has {len(other)} ciphertexts, expected {len(acc)}")
        acc = [a * b % nsq for a, b in zip(acc, other, strict=True)]
    return to_chunks([int(a) for a in acc], bundle)


def _decrypt_block(n: int, p: int, q: int, cts: list[int]) -> list[int]:
    pub = paillier.PaillierPublicKey(n)
    priv = paillier.PaillierPrivateKey(pub, p, q)
    return [priv.raw_decrypt(c) for c in cts]


def decrypt(
    chunks: list[bytes], bundle: KeyBundle, packing: Packing, size: int, *, workers: int = 1
) -> np.ndarray:
    """Summed integers of a payload (client side)."""
    priv = private_key(bundle)
    cts = from_chunks(chunks, bundle)
    if len(cts) * packing.per_ct < size:
        raise PayloadError(f"payload holds {len(cts)} ciphertexts, too few for {size} values")
    n_workers = workers if len(cts) >= PARALLEL_MIN_CTS else 1
    blocks = [(priv.public_key.n, priv.p, priv.q, b) for b in _split(cts, n_workers)]
    plaintexts = [m for block in _map_blocks(_decrypt_block, blocks, n_workers) for m in block]
    return unpack(plaintexts, packing, size)


def _packing(header: Header) -> Packing:
    try:
        return Packing.from_dict(header.extra["packing"])
    except (KeyError, TypeError, ValueError) as e:
        raise PayloadError(f"payload header has no valid Paillier packing ({e!r})") from e


class PaillierBackend:
    """The packed Paillier backend (phe): adds ciphertexts only."""

    name = "paillier"
    multiplies = False

    def keygen(self, params: dict[str, Any] | None = None) -> KeyBundle:
        return keygen(params)

    def plan(self, bundle: KeyBundle, settings: EncodeSettings) -> Packing:
        return Packing.plan(
            key_bits=int(bundle.params["key-bits"]),
            bits=settings.bits,
            max_count=settings.max_count,
            packed=settings.packed,
        )

    def encoding(self, bundle: KeyBundle, settings: EncodeSettings) -> dict[str, Any]:
        return {"packing": self.plan(bundle, settings).as_dict(), "max_count": settings.max_count}

    def encrypt(self, values: np.ndarray, bundle: KeyBundle, settings: EncodeSettings,
                rng: np.random.Generator) -> list[bytes]:  # fmt: skip
        u = quantize(values, bound=settings.clip, bits=settings.bits, rng=rng)
        return encrypt(u, bundle, self.plan(bundle, settings), workers=settings.workers)

    def check_chunks(self, chunks: list[bytes], bundle: KeyBundle, header: Header) -> None:
        packing = _packing(header)
        if packing.per_ct < 1:
            raise PayloadError(f"payload packing has {packing.per_ct} values per ciphertext")
        check_chunks(chunks, bundle, header.layout.size, packing)

    def add(self, chunk_lists: list[list[bytes]], bundle: KeyBundle) -> list[bytes]:
        return add(chunk_lists, bundle)

    def decrypt(
        self, chunks: list[bytes], bundle: KeyBundle, header: Header, *, workers: int = 1
    ) -> np.ndarray:
        packing = _packing(header)
        sums = decrypt(chunks, bundle, packing, header.layout.size, workers=workers)
        if np.any(sums > np.uint64(header.count * (2**packing.bits - 1))):
            raise PayloadError("a slot exceeds its range: some contribution was out of range")
        clip = float(header.extra["clip"])
        return dequantize_sum(sums, bound=clip, bits=packing.bits, count=header.count)

    def scores(self, query: ScoreQuery, bundle: KeyBundle) -> list[bytes]:
        raise PayloadError(
            "encrypted scores need ciphertext multiplication; Paillier only adds ciphertexts"
        )


BACKEND = PaillierBackend()
