"""Encrypted payloads carried in an ArrayRecord, tagged with scheme, parameters and key.

The header and each ciphertext chunk are ``Array`` objects whose ``stype`` is
ours, not ``numpy.ndarray``: Flower's plain FedAvg calls ``Array.numpy()`` and
fails loudly on them instead of averaging ciphertext bytes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord

HEADER_KEY = "he-header"
CHUNK_PREFIX = "he-chunk-"
HEADER_STYPE = "flower-flwr_privacy/he-header"
CHUNK_STYPE = "flower-flwr_privacy/he-ciphertext"


class PayloadError(ValueError):
    """A payload is malformed, truncated, or made with other keys or parameters."""


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of the plaintext arrays, in packing order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @property
    def size(self) -> int:
        total = 0
        for shape in self.shapes:
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "dtypes": list(self.dtypes),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Layout:
        return cls(
            names=tuple(str(n) for n in raw["names"]),
            shapes=tuple(tuple(int(d) for d in s) for s in raw["shapes"]),
            dtypes=tuple(str(t) for t in raw["dtypes"]),
        )


@dataclass(frozen=True)
class Header:
    """What a decryptor must check before touching the ciphertexts.

    ``count`` is how many client contributions were summed, ``weight`` the sum
    of their weights (the decryptor divides by it), ``clipped`` how many
    plaintext values were clipped before encryption.
    """

    scheme: str
    params: dict[str, Any]
    fingerprint: str
    layout: Layout
    count: int = 1
    weight: float = 1.0
    clipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "scheme": self.scheme,
                "params": self.params,
                "fingerprint": self.fingerprint,
                "layout": self.layout.as_dict(),
                "count": self.count,
                "weight": self.weight,
                "clipped": self.clipped,
                "extra": self.extra,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        try:
            raw = json.loads(data.decode())
            header = cls(
                scheme=str(raw["scheme"]),
                params=dict(raw["params"]),
                fingerprint=str(raw["fingerprint"]),
                layout=Layout.from_dict(raw["layout"]),
                count=int(raw["count"]),
                weight=float(raw["weight"]),
                clipped=int(raw["clipped"]),
                extra=dict(raw.get("extra", {})),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise PayloadError(f"unreadable payload header ({e})") from e
        if header.count < 1 or not header.weight > 0:
            raise PayloadError(f"payload header has count {header.count}, weight {header.weight}")
        return header


@dataclass(frozen=True)
class Payload:
    header: Header
    chunks: tuple[bytes, ...]

    def to_arrays(self) -> ArrayRecord:
        record = ArrayRecord()
        head = self.header.to_bytes()
        record[HEADER_KEY] = Array(dtype="json", shape=(len(head),), stype=HEADER_STYPE, data=head)
        for i, chunk in enumerate(self.chunks):
            record[f"{CHUNK_PREFIX}{i:06d}"] = Array(
                dtype="bytes", shape=(len(chunk),), stype=CHUNK_STYPE, data=chunk
            )
        return record

    @classmethod
    def from_arrays(cls, record: ArrayRecord) -> Payload:
        if HEADER_KEY not in record:
            raise PayloadError("not an encrypted payload: no header (plaintext arrays?)")
        head = record[HEADER_KEY]
        if head.stype != HEADER_STYPE:
            raise PayloadError(f"payload header has stype {head.stype!r}")
        keys = sorted(k for k in record.keys() if k != HEADER_KEY)
        expected = [f"{CHUNK_PREFIX}{i:06d}" for i in range(len(keys))]
        if keys != expected:
            raise PayloadError("payload chunks are missing, extra or misnamed")
        chunks = []
        for k in keys:
            if record[k].stype != CHUNK_STYPE:
                raise PayloadError(f"payload chunk {k} has stype {record[k].stype!r}")
            chunks.append(bytes(record[k].data))
        return cls(header=Header.from_bytes(bytes(head.data)), chunks=tuple(chunks))


def save_payload(payload: Payload, path: Path) -> Path:
    """Write a payload (ciphertexts only: safe to store where the server keeps results)."""
    raw = {
        "header": payload.header.to_bytes().decode(),
        "chunks": [base64.b64encode(c).decode() for c in payload.chunks],
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(raw))
    tmp.replace(path)
    return path


def load_payload(path: Path) -> Payload:
    try:
        raw = json.loads(Path(path).read_text())
        chunks = tuple(base64.b64decode(c, validate=True) for c in raw["chunks"])
        return Payload(header=Header.from_bytes(raw["header"].encode()), chunks=chunks)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PayloadError(f"{path}: not a saved payload ({e})") from e


def is_encrypted(record: ArrayRecord) -> bool:
    return HEADER_KEY in record
