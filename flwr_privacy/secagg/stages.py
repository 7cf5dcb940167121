"""The records SecAgg+ stages travel in, shared by the server layer and the client mod.

Every stage is a ``train`` message (as Flower's own SecAgg+ does) carrying the
``flwr-privacy.secagg`` ConfigRecord; the client mod answers all but the masked
input stage itself, so the app's train function never sees them. Signed key
advertisements travel as four parallel lists (``c``, ``s``, ``commit``, ``sig``). Node ids
travel as bytes (Flower records hold signed 64-bit ints; node ids are unsigned).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ConfigRecord, Message

from flwr_privacy.records import SECAGG_RECORD, settings_record
from flwr_privacy.secagg.crypto import SecAggError
from flwr_privacy.secagg.protocol import Advert, bytes_to_ids, ids_to_bytes

HELLO, KEYS, SHARES, MASK, SIGN, UNMASK = "hello", "keys", "shares", "mask", "sign", "unmask"
STAGE_ORDER = (KEYS, SHARES, MASK, SIGN, UNMASK)  # HELLO: once per node, its roster identity
SIM_TRUST_DIR = "sim-trust-dir"  # record key: where a simulation's per-run keys are
SERVER_FIX = "the server must wrap its strategy in SecAggPlus(..., secagg=SecAggSettings(...))"


def stage_record(stage: str, round_: int, session: bytes, **values: Any) -> ConfigRecord:
    return ConfigRecord({"stage": stage, "round": round_, "session": session, **values})


def read(record: Mapping[str, Any], key: str, kind: type, who: str) -> Any:
    """``record[key]`` of type ``kind``; SecAggError naming ``who`` and the key otherwise."""
    if key not in record:
        raise SecAggError(f"{who}: SecAgg record lacks '{key}'")
    value = record[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
            raise SecAggError(f"{who}: SecAgg record key '{key}' must be a list of bytes")
    elif not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise SecAggError(f"{who}: SecAgg record key '{key}' must be {kind.__name__}")
    return value


def id_map(record: Mapping[str, Any], ids_key: str, values_key: str, who: str) -> dict[int, bytes]:
    """``{node: bytes}`` from a record's id list and value list of the same length."""
    ids = bytes_to_ids(read(record, ids_key, bytes, who))
    values = read(record, values_key, list, who) if ids else []
    if len(ids) != len(values) or len(set(ids)) != len(ids):
        raise SecAggError(f"{who}: '{ids_key}' and '{values_key}' do not pair up")
    return dict(zip(ids, values, strict=True))


def id_map_values(mapping: Mapping[int, bytes], ids_key: str, values_key: str) -> dict[str, Any]:
    ids = sorted(mapping)
    return {ids_key: ids_to_bytes(ids), values_key: [mapping[i] for i in ids]}


def secagg_record(msg: Message, who: str) -> ConfigRecord:
    record = settings_record(msg, SECAGG_RECORD)
    if record is None:
        raise SecAggError(f"{who}: the message has no '{SECAGG_RECORD}' record; {SERVER_FIX}")
    return record


ADVERT_KEYS = ("c", "s", "commit", "sig")


def adverts_from(record: Mapping[str, Any], who: str) -> dict[int, Advert]:
    """``{node: Advert}`` from a record's ``ids`` and the four advertisement lists."""
    parts = [id_map(record, "ids", key, who) for key in ADVERT_KEYS]
    return {j: Advert(*(p[j] for p in parts)) for j in parts[0]}


def adverts_values(adverts: Mapping[int, Advert]) -> dict[str, Any]:
    ids = sorted(adverts)
    return {"ids": ids_to_bytes(ids),
            **{key: [adverts[j][k] for j in ids] for k, key in enumerate(ADVERT_KEYS)}}  # fmt: skip
