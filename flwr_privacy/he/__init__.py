"""Homomorphic encryption for aggregation: key bundles, tagged payloads, CKKS and Paillier."""

from flwr_privacy.he.bundle import BACKENDS, BundleError, KeyBundle, load_bundle
from flwr_privacy.he.codec import (
    EncodeSettings,
    aggregate,
    check_compatible,
    decrypt_arrays,
    encrypt_arrays,
    encrypted_scores,
    layout_of,
    score_bound,
    validate_payload,
)
from flwr_privacy.he.payload import Payload, PayloadError, is_encrypted, load_payload, save_payload


def keygen(backend: str, params: dict | None = None) -> KeyBundle:
    """A fresh client bundle (with secret key) for ``backend``."""
    from flwr_privacy.he import ckks, paillier

    if backend == "ckks":
        return ckks.keygen(params)
    if backend == "paillier":
        return paillier.keygen(params)
    raise BundleError(f"unknown HE backend {backend!r}; allowed: {BACKENDS}")


__all__ = [
    "BACKENDS",
    "BundleError",
    "EncodeSettings",
    "KeyBundle",
    "Payload",
    "PayloadError",
    "aggregate",
    "check_compatible",
    "decrypt_arrays",
    "encrypt_arrays",
    "encrypted_scores",
    "score_bound",
    "is_encrypted",
    "keygen",
    "layout_of",
    "load_bundle",
    "load_payload",
    "save_payload",
    "validate_payload",
]
