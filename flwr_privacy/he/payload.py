"""Encrypted payloads carried in an ArrayRecord, tagged with scheme, parameters and key.

The header and each ciphertext chunk are ``Array`` objects whose ``stype`` is
ours, not ``numpy.ndarray``: Flower's plain FedAvg calls ``Array.numpy()`` and
fails loudly on them instead of averaging ciphertext bytes.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord

__all__ = [
    "CHUNK_PREFIX",
    "CHUNK_STYPE",
    "HEADER_KEY",
    "HEADER_STYPE",
    "Header",
    "KeyMismatchError",
    "Layout",
    "Payload",
    "PayloadError",
    "is_encrypted",
    "load_payload",
    "save_payload",
]

HEADER_KEY = "he-header"
CHUNK_PREFIX = "he-chunk-"
HEADER_STYPE = "flower-flwr_privacy/he-header"
CHUNK_STYPE = "flower-flwr_privacy/he-ciphertext"


class PayloadError(ValueError):
    """A payload is malformed, truncated, or made with other keys or parameters."""


class KeyMismatchError(PayloadError):
    """A payload was encrypted under another key generation than the one this party holds."""


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PayloadError(f"payload header field {what} must be an integer, got {value!r:.40}")
    return value


def _real(value: object, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise PayloadError(f"payload header field {what} must be a finite number, got {value!r:.40}")


def _typed(value: object, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise PayloadError(
            f"payload header field {what} must be a {kind.__name__}, got {value!r:.40}"
        )
    return value


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
    def from_dict(cls, raw: object) -> Layout:
        """The layout of a header, every field type-checked (raises ``PayloadError``)."""
        fields: dict[str, Any] = _typed(raw, dict, "layout")
        names = _typed(fields.get("names"), list, "layout.names")
        shapes = _typed(fields.get("shapes"), list, "layout.shapes")
        dtypes = _typed(fields.get("dtypes"), list, "layout.dtypes")
        if not len(names) == len(shapes) == len(dtypes):
            raise PayloadError("payload layout has names, shapes and dtypes of different lengths")
        dims = [_typed(s, list, "layout.shapes[i]") for s in shapes]
        layout = cls(
            names=tuple(_typed(n, str, "layout.names[i]") for n in names),
            shapes=tuple(tuple(_int(d, "layout.shapes[i][j]") for d in s) for s in dims),
            dtypes=tuple(_typed(t, str, "layout.dtypes[i]") for t in dtypes),
        )
        if any(d < 0 for s in layout.shapes for d in s):
            raise PayloadError("payload layout has a negative dimension")
        return layout


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
        """Parse a header; every field must have its type (no coercion), else ``PayloadError``."""
        try:
            raw = json.loads(data.decode())
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise PayloadError(f"unreadable payload header ({e})") from e
        raw = _typed(raw, dict, "(header)")
        missing = {"scheme", "params", "fingerprint", "layout", "count", "weight", "clipped"}
        missing -= set(raw)
        if missing:
            raise PayloadError(f"payload header lacks {sorted(missing)}")
        header = cls(
            scheme=_typed(raw["scheme"], str, "scheme"),
            params=_typed(raw["params"], dict, "params"),
            fingerprint=_typed(raw["fingerprint"], str, "fingerprint"),
            layout=Layout.from_dict(raw["layout"]),
            count=_int(raw["count"], "count"),
            weight=_real(raw["weight"], "weight"),
            clipped=_int(raw["clipped"], "clipped"),
            extra=_typed(raw.get("extra", {}), dict, "extra"),
        )
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


def load_payload(path: str | Path) -> Payload:
    try:
        raw = json.loads(Path(path).read_text())
        chunks = tuple(base64.b64decode(c, validate=True) for c in raw["chunks"])
        return Payload(header=Header.from_bytes(raw["header"].encode()), chunks=chunks)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PayloadError(f"{path}: not a saved payload ({e})") from e


def is_encrypted(record: ArrayRecord) -> bool:
    """Whether ``record`` is an encrypted payload (it carries the payload header)."""
    return HEADER_KEY in record
