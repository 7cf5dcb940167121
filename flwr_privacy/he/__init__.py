"""Homomorphic encryption for aggregation: key bundles, tagged payloads, CKKS and Paillier.

Importing this package loads neither TenSEAL nor phe: a scheme's backend module
is imported the first time a bundle or payload of that scheme is used
(``backend_for``).
"""

from flwr_privacy.he.backend import (
    Backend,
    EncodeSettings,
    backend_for,
    backend_names,
    register_backend,
)
from flwr_privacy.he.bundle import BACKENDS, BundleError, KeyBundle, load_bundle
from flwr_privacy.he.check import check_compatible, check_contribution, validate_payload
from flwr_privacy.he.codec import (
    aggregate,
    decrypt_arrays,
    encrypt_arrays,
    encrypted_scores,
    layout_of,
    score_bound,
)
from flwr_privacy.he.payload import (
    KeyMismatchError,
    Payload,
    PayloadError,
    is_encrypted,
    load_payload,
    save_payload,
)


def keygen(backend: str, params: dict | None = None) -> KeyBundle:
    """A fresh client bundle (with secret key) for ``backend``."""
    if backend not in backend_names():
        raise BundleError(f"unknown HE backend {backend!r}; allowed: {backend_names()}")
    return backend_for(backend).keygen(params)


__all__ = [
    "BACKENDS",
    "Backend",
    "BundleError",
    "EncodeSettings",
    "KeyBundle",
    "KeyMismatchError",
    "Payload",
    "PayloadError",
    "aggregate",
    "backend_for",
    "backend_names",
    "check_compatible",
    "check_contribution",
    "decrypt_arrays",
    "encrypt_arrays",
    "encrypted_scores",
    "score_bound",
    "is_encrypted",
    "keygen",
    "layout_of",
    "load_bundle",
    "load_payload",
    "register_backend",
    "save_payload",
    "validate_payload",
]
