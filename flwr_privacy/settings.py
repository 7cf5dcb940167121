"""Typed settings of the HE layer and the record that carries them to the client mod.

The server-side layer (``EncryptedFedAvg(he=HeSettings(...))``) writes an
``HeRound`` as the ``flwr-privacy.he`` record on every message it sends; the
client's ``he_mod`` reads nothing else. A setting that is missing or of the
wrong type is a ``SettingsError`` naming the record key and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from flwr.app import ConfigRecord

from flwr_privacy.he.bundle import BACKENDS
from flwr_privacy.he.codec import EncodeSettings

__all__ = [
    "CIPHERTEXT_OK",
    "HeRound",
    "HeSettings",
    "PACKINGS",
    "SERVER_FIX",
    "SettingsError",
    "handles_ciphertext",
]

PACKINGS = ("packed", "naive")
SERVER_FIX = "the server must use EncryptedFedAvg(he=HeSettings(...)) (or EncryptedFedProx)"
F = TypeVar("F", bound=Callable[..., Any])
CIPHERTEXT_OK = "handles_ciphertext"


class SettingsError(ValueError):
    """A layer's record is missing, incomplete or inconsistent with this node."""


@dataclass(frozen=True, kw_only=True)
class HeSettings:
    """Server-blind HE of client updates.

    Parameters
    ----------
    backend : str
        ``"ckks"`` (TenSEAL, approximate) or ``"paillier"`` (phe, exact integers).
    clip : float
        Every plaintext value is clipped to ``[-clip, clip]`` before encoding;
        Paillier's fixed point and the encrypted box plot's range check need it.
    bits : int
        Paillier quantization bits per value.
    packing : str
        ``"packed"``: many values per Paillier ciphertext; ``"naive"``: one.
    workers : int
        Processes a client may use for Paillier encryption and decryption.
    server_bundle, client_bundle : str
        Paths of the dealer's bundles (``python -m flwr_privacy.keys generate``).
        Without a server bundle the strategy deals per-run keys itself
        (simulation only: one process holds the dealer's output). A
        ``client_bundle`` path is sent to clients, which is only sensible in a
        simulation; SuperNodes take theirs from node config ``he-client-bundle``.
    key_params : mapping, optional
        Key-generation parameters for per-run keys (see ``flwr_privacy.keys``).
    seed : int
        Seeds the stochastic rounding of Paillier quantization (reproducibility,
        not secrecy: the ciphertexts' own randomness protects the values).
    """

    backend: str
    clip: float = 4.0
    bits: int = 16
    packing: str = "packed"
    workers: int = 1
    server_bundle: str = ""
    client_bundle: str = ""
    key_params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"HeSettings.backend = {self.backend!r}; allowed: {BACKENDS}")
        if not self.clip > 0:
            raise ValueError(f"HeSettings.clip = {self.clip!r} must be > 0")
        if not 2 <= self.bits <= 32:
            raise ValueError(f"HeSettings.bits = {self.bits!r} must be in [2, 32]")
        if self.packing not in PACKINGS:
            raise ValueError(f"HeSettings.packing = {self.packing!r}; allowed: {PACKINGS}")
        if self.workers < 1:
            raise ValueError(f"HeSettings.workers = {self.workers!r} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class HeRound:
    """What the HE mod needs for one message: encoding, weights, key and round."""

    backend: str
    clip: float
    bits: int
    packed: bool
    workers: int
    max_count: int
    weight_scale: float
    weight_key: str
    server_round: int
    seed: int
    fingerprint: str
    client_bundle: str = ""

    @property
    def encoding(self) -> EncodeSettings:
        return EncodeSettings(clip=self.clip, bits=self.bits, max_count=self.max_count,
                              packed=self.packed, workers=self.workers)  # fmt: skip

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({k.replace("_", "-"): v for k, v in asdict(self).items()})

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> HeRound:
        values: dict[str, Any] = {}
        for name, kind in _ROUND_FIELDS.items():
            key = name.replace("_", "-")
            if key not in record:
                if name == "client_bundle":
                    continue
                raise SettingsError(f"record key '{key}' is missing; {SERVER_FIX}")
            value = record[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise SettingsError(
                    f"record key '{key}' = {value!r} is not {kind.__name__}; {SERVER_FIX}"
                )
            values[name] = value
        return cls(**values)


_ROUND_FIELDS: dict[str, type] = {
    "backend": str, "clip": float, "bits": int, "packed": bool, "workers": int,
    "max_count": int, "weight_scale": float, "weight_key": str, "server_round": int,
    "seed": int, "fingerprint": str, "client_bundle": str,
}  # fmt: skip


def handles_ciphertext(fn: F) -> F:
    """Mark a server-side ``evaluate_fn`` that expects encrypted arrays (e.g. one that saves them).

    Encrypted strategies refuse any other ``evaluate_fn``: centralized evaluation
    would be handed ciphertext.

    Parameters
    ----------
    fn : callable
        The ``evaluate_fn(server_round, arrays)``; returned unchanged, marked.
    """
    setattr(fn, CIPHERTEXT_OK, True)  # noqa: B010 (a marker attribute on any callable)
    return fn
