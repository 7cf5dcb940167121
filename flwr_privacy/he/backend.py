"""The HE backend registry: one small protocol, one object per scheme, loaded when used.

Aggregation code never branches on a scheme's name: it asks ``backend_for(name)``
for the object that encrypts, adds, checks and decrypts. A backend module (and
with it TenSEAL or phe) is imported only the first time its scheme is used, so
``import flwr_privacy.he`` stays light. A new scheme plugs in with
``register_backend("name", "package.module")``; the module defines ``BACKEND``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from flwr_privacy.he.bundle import KeyBundle
    from flwr_privacy.he.payload import Header


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


@dataclass(frozen=True)
class ScoreQuery:
    """Encrypted scores to compute: clients' chunks and weights, and the center.

    ``center`` is the encrypted global model's chunks (scaled by
    ``center_weight``), a plaintext vector, or None for the weighted mean.
    """

    chunk_lists: list[list[bytes]]
    weights: list[float]
    size: int
    center: list[bytes] | np.ndarray | None = None
    center_weight: float = 1.0


class Backend(Protocol):
    """What weighted aggregation needs from a homomorphic scheme.

    ``multiplies`` says whether ciphertexts can be multiplied (encrypted
    box-plot scores); a backend that only adds raises ``PayloadError`` from
    ``scores``.
    """

    name: str
    multiplies: bool

    def keygen(self, params: dict[str, Any] | None = None) -> KeyBundle:
        """A fresh client bundle (secret key included)."""
        ...

    def encoding(self, bundle: KeyBundle, settings: EncodeSettings) -> dict[str, Any]:
        """Header ``extra`` fields (besides ``clip``) of a contribution made under ``settings``."""
        ...

    def encrypt(self, values: np.ndarray, bundle: KeyBundle, settings: EncodeSettings,
                rng: np.random.Generator) -> list[bytes]:  # fmt: skip
        """Ciphertext chunks of clipped, weighted values in [-clip, clip]."""
        ...

    def check_chunks(self, chunks: list[bytes], bundle: KeyBundle, header: Header) -> None:
        """Raise ``PayloadError`` unless ``chunks`` are exactly the ciphertexts ``header`` needs."""
        ...

    def add(self, chunk_lists: list[list[bytes]], bundle: KeyBundle) -> list[bytes]:
        """Element-wise sum of several payloads' ciphertexts (public material only)."""
        ...

    def decrypt(
        self, chunks: list[bytes], bundle: KeyBundle, header: Header, *, workers: int = 1
    ) -> np.ndarray:
        """The decrypted sum of the weighted values, ``header.layout.size`` floats."""
        ...

    def scores(self, query: ScoreQuery, bundle: KeyBundle) -> list[bytes]:
        """Encrypted mean squared deviations from a center (see ``ckks.deviation_scores``)."""
        ...


_MODULES: dict[str, str] = {
    "ckks": "flwr_privacy.he.ckks",
    "paillier": "flwr_privacy.he.paillier",
}


def register_backend(name: str, module: str) -> None:
    """Make scheme ``name`` available; ``module`` (imported on first use) defines ``BACKEND``."""
    _MODULES[name] = module


def backend_names() -> tuple[str, ...]:
    """Every registered scheme, in registration order."""
    return tuple(_MODULES)


def backend_for(name: str) -> Backend:
    """The backend object of scheme ``name``, importing its module on first use."""
    if name not in _MODULES:
        raise ValueError(f"unknown HE backend {name!r}; allowed: {backend_names()}")
    backend: Backend = importlib.import_module(_MODULES[name]).BACKEND
    return backend
