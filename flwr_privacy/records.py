"""Record keys: Flower's own, and the namespaced records each layer writes for its mod.

A server-side layer adds its settings to every message it sends as a ConfigRecord
under its own name (``flwr-privacy.<layer>``); the matching client mod reads only
that record, so no user ever sets a config key by hand.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

__all__ = [
    "ARRAYS",
    "CONFIG",
    "DP_RECORD",
    "HE_RECORD",
    "METRICS",
    "NUM_EXAMPLES",
    "SECAGG_RECORD",
    "TAMPER_RECORD",
    "as_float",
    "as_floats",
    "as_int",
    "attach",
    "flatten",
    "settings_record",
    "unflatten",
]

ARRAYS = "arrays"  # Flower's key for the model ArrayRecord
METRICS = "metrics"  # Flower's key for the MetricRecord
CONFIG = "config"  # Flower's key for the ConfigRecord
NUM_EXAMPLES = "num-examples"  # Flower's weighting key

HE_RECORD = "flwr-privacy.he"  # written by EncryptedFedAvg / EncryptedFedProx, read by he_mod
DP_RECORD = "flwr-privacy.dp"  # written by the client-DP layer, read by the DP mods / helpers
SECAGG_RECORD = "flwr-privacy.secagg"  # written by SecAggPlus at each stage, read by secagg_mod
TAMPER_RECORD = "flwr-privacy.tamper"  # attack harness (experiments only), read by tamper_mod


def as_int(value: object) -> int:
    """``int(value)`` for a record value, typed: record values are a union of scalars and lists.

    Raises TypeError (as ``int()`` does) for a value that is no number or numeric string.
    """
    if isinstance(value, int | float | str | bytes):
        return int(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def as_float(value: object) -> float:
    """``float(value)`` for a record value, typed (TypeError, as ``float()``, for no number)."""
    if isinstance(value, int | float | str | bytes):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def as_floats(value: object) -> list[float]:
    """A record's list of numbers as floats, typed (TypeError for anything but a list)."""
    if isinstance(value, list):
        return [as_float(v) for v in value]
    raise TypeError(f"expected a list of numbers, got {type(value).__name__}")


def attach(messages: Iterable[Message], name: str, record: ConfigRecord) -> list[Message]:
    """Add a layer's settings ``record`` under ``name`` to every message a strategy sends."""
    out = []
    for msg in messages:
        msg.content[name] = ConfigRecord(dict(record))
        out.append(msg)
    return out


def settings_record(msg: Message, name: str) -> ConfigRecord | None:
    """The record ``name`` a server-side layer wrote on ``msg``, or None."""
    if not msg.has_content():
        return None
    return msg.content.config_records.get(name)


def flatten(arrays: ArrayRecord) -> np.ndarray:
    """The model's arrays as one float64 vector, in the record's order."""
    parts = [a.numpy().astype(np.float64).ravel() for a in arrays.values()]
    return np.concatenate(parts) if parts else np.zeros(0)


def unflatten(flat: np.ndarray, like: ArrayRecord) -> ArrayRecord:
    """``flat`` back into arrays of ``like``'s names, shapes and dtypes."""
    out, offset = {}, 0
    for key, array in like.items():
        a = array.numpy()
        out[key] = Array(flat[offset : offset + a.size].reshape(a.shape).astype(a.dtype))
        offset += a.size
    return ArrayRecord(out)
