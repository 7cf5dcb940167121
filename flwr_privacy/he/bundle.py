"""Key bundles: the public part every party holds, the secret part only clients hold.

A bundle file is JSON (never pickle): backend, public parameters, the public
key material, optionally the secret key, and a fingerprint of the public part
that every payload carries, so material from another key generation is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flwr_privacy.he.backend import backend_names

FORMAT = "flower-flwr_privacy/he-bundle/1"
BACKENDS = backend_names()  # the built-in schemes; ``register_backend`` adds more


class BundleError(ValueError):
    """A key bundle is missing, malformed, of the wrong kind or lacks a needed key."""


@dataclass(frozen=True)
class KeyBundle:
    """Key material of one key generation.

    ``public`` is what the server may hold (CKKS: a TenSEAL context without the
    secret key; Paillier: the modulus n). ``secret`` is the secret key material
    (CKKS: the full context; Paillier: p and q), present only in client bundles.
    ``evaluation`` (CKKS with ``eval-keys``) holds relinearization and Galois
    keys, which let the server multiply and sum slots for encrypted box-plot
    scores; only the server bundle carries them (tens of MB, clients need none).
    """

    backend: str
    params: dict[str, Any]
    public: bytes
    secret: bytes | None = field(default=None, repr=False)
    evaluation: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in backend_names():
            raise BundleError(f"unknown HE backend {self.backend!r}; allowed: {backend_names()}")

    @property
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of backend, parameters and public key material."""
        h = hashlib.sha256()
        h.update(self.backend.encode())
        h.update(json.dumps(self.params, sort_keys=True).encode())
        h.update(self.public)
        return h.hexdigest()[:16]

    @property
    def is_private(self) -> bool:
        return self.secret is not None

    def public_only(self) -> KeyBundle:
        """The server's view: same fingerprint, no secret key."""
        return replace(self, secret=None)

    def for_client(self) -> KeyBundle:
        """The clients' view: same fingerprint, no server-side evaluation keys."""
        return replace(self, evaluation=None)

    def require_secret(self, purpose: str) -> bytes:
        if self.secret is None:
            raise BundleError(
                f"{purpose} needs the secret key, but this {self.backend} bundle "
                f"({self.fingerprint}) is public-only (a server bundle)"
            )
        return self.secret

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "backend": self.backend,
                "params": self.params,
                "fingerprint": self.fingerprint,
                "public": base64.b64encode(self.public).decode(),
                "secret": None if self.secret is None else base64.b64encode(self.secret).decode(),
                "evaluation": None if self.evaluation is None else _b64(self.evaluation),
                "evaluation-sha256": None if self.evaluation is None else _sha(self.evaluation),
            }
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "bundle") -> KeyBundle:
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT:
                raise BundleError(f"{source}: not a {FORMAT} file")
            bundle = cls(
                backend=raw["backend"],
                params=dict(raw["params"]),
                public=base64.b64decode(raw["public"], validate=True),
                secret=None if raw["secret"] is None else base64.b64decode(raw["secret"]),
                evaluation=_unb64(raw.get("evaluation")),
            )
            if bundle.evaluation is not None and _sha(bundle.evaluation) != raw.get(
                "evaluation-sha256"
            ):
                raise BundleError(f"{source}: evaluation keys do not match their checksum")
        except BundleError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{source}: malformed key bundle ({e})") from e
        if bundle.fingerprint != raw.get("fingerprint"):
            raise BundleError(f"{source}: fingerprint does not match its content (corrupted?)")
        return bundle

    def save(self, path: str | Path) -> Path:
        """Write the bundle; files holding a secret key are readable by the owner only."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if self.is_private else 0o644
        )
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
        return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_bundle(path: str | Path, *, expect_private: bool | None = None) -> KeyBundle:
    """Load a bundle file; ``expect_private`` False refuses one that holds a secret key."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"HE key bundle not found: {path}")
    bundle = KeyBundle.from_json(path.read_text(), source=str(path))
    if expect_private is False and bundle.is_private:
        raise BundleError(f"{path} holds a secret key; the server must get the server bundle only")
    if expect_private is True and not bundle.is_private:
        raise BundleError(
            f"{path} is a server bundle without secret key; clients need the client bundle"
        )
    return bundle
