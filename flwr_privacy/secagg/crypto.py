"""Key agreement, key derivation and the mask generator of SecAgg+.

Every client makes two fresh X25519 key pairs a round: ``c`` encrypts the Shamir
shares it sends a neighbour, ``s`` agrees the pairwise mask with that neighbour.
Keys are derived with HKDF-SHA256 bound to the round's session id, the round and
both node ids, so a key, share or mask of one round or pair is useless in any
other. Masks are ChaCha20 keystreams (256-bit keys): Flower's own
``pseudo_rand_gen`` folds every seed into 32 bits for NumPy's Mersenne Twister and
is not used. Share encryption is Flower's (Fernet: AES-CBC + HMAC), under a key
derived here. Nothing here is a hand-written primitive: only their composition.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # X25519 keys, HKDF outputs, self-mask seeds
SESSION_BYTES = 16
_RAW = serialization.Encoding.Raw
_PUBLIC = serialization.PublicFormat.Raw
_PRIVATE = serialization.PrivateFormat.Raw


class SecAggError(ValueError):
    """A SecAgg+ message or value is malformed, misaddressed, replayed or refused."""


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw bytes (what a Flower record can hold)."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        sk = X25519PrivateKey.generate()
        return cls(
            sk.private_bytes(_RAW, _PRIVATE, serialization.NoEncryption()),
            sk.public_key().public_bytes(_RAW, _PUBLIC),
        )


def public_key_of(private: bytes) -> bytes:
    """The public key of a raw private key (checks reconstructed secrets)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(_RAW, _PUBLIC)


def check_public_key(public: object, node: int) -> bytes:
    """``public`` if it is a valid X25519 public key, else SecAggError naming ``node``."""
    if not isinstance(public, bytes) or len(public) != KEY_BYTES:
        raise SecAggError(f"node {node}: public key must be {KEY_BYTES} raw bytes")
    try:
        X25519PublicKey.from_public_bytes(public)
    except ValueError as e:
        raise SecAggError(f"node {node}: malformed public key ({e})") from None
    return public


def _ids(*numbers: int) -> bytes:
    return b"".join(int(n).to_bytes(8, "little", signed=False) for n in numbers)


def derive(secret: bytes, label: bytes, session: bytes, *numbers: int) -> bytes:
    """A 256-bit key from ``secret``, bound to a label, the session and the given ids."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=session,
        info=b"flwr-privacy/secagg/" + label + b"|" + _ids(*numbers),
    )
    return hkdf.derive(secret)


def agree(
    private: bytes, public: bytes, label: bytes, session: bytes, round_: int, a: int, b: int
) -> bytes:
    """The key two nodes ``a`` and ``b`` share (ECDH + HKDF); symmetric in the pair."""
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except (ValueError, InvalidKey) as e:
        raise SecAggError(f"key agreement between nodes {a} and {b} failed: {e}") from None
    lo, hi = sorted((a, b))
    return derive(shared, label, session, round_, lo, hi)


def fernet_key(key: bytes) -> bytes:
    """A 32-byte key in the url-safe base64 form Flower's ``encrypt``/``decrypt`` take."""
    return base64.urlsafe_b64encode(key)


def new_seed() -> bytes:
    """A fresh self-mask seed from the OS CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def new_session() -> bytes:
    return secrets.token_bytes(SESSION_BYTES)


def mask(key: bytes, size: int) -> np.ndarray:
    """``size`` uniform uint32 values: the ChaCha20 keystream of ``key`` (nonce 0).

    Each key is used for one mask only (keys are bound to round, session and
    pair), so a fixed nonce is safe. Uniform mod any power of two up to 2^32.
    """
    if len(key) != KEY_BYTES:
        raise ValueError("a mask key has 32 bytes")
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(bytes(4 * size))
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)
