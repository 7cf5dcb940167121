"""A mutated client payload is refused with a reason; it never crashes the server's round.

Property-based (hypothesis): header fields set to other types and values, raw
header bytes and ciphertext chunks bit-flipped, truncated, added, dropped or
renamed, for both backends. Every example runs ``aggregate_train`` of a real
EncryptedFedAvg on two good replies and the mutated one: it must not raise,
must refuse the mutated reply (unless the mutation is one the server cannot
tell from an honest reply), and must still add the good ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from flwr_privacy.he import (
    EncodeSettings,
    KeyBundle,
    Payload,
    PayloadError,
    aggregate,
    check_contribution,
    decrypt_arrays,
    encrypt_arrays,
    layout_of,
)
from flwr_privacy.he.payload import CHUNK_PREFIX, CHUNK_STYPE, HEADER_KEY, HEADER_STYPE
from flwr_privacy.strategy.encrypted import EncryptedFedAvg

pytestmark = pytest.mark.usefixtures("server_identity")

# 4163 values: two CKKS ciphertexts (4096 slots each), 37 packed Paillier ciphertexts.
SHAPES = {"w": ((64, 65), np.float32), "b": ((3,), np.float64)}
SETTINGS = EncodeSettings(clip=1.0, bits=16, max_count=3)
EXAMPLES = 70  # per backend and mutation kind: 2 x 3 x 70 = 420 mutated payloads
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Round:
    """A server strategy in a round, two honest payloads and their expected sum."""

    keys: KeyBundle
    strategy: EncryptedFedAvg
    plain: list[dict[str, np.ndarray]]
    good: list[Payload]
    summed: Payload
    rejected: dict[int, str] = field(default_factory=dict)


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: rng.uniform(-1, 1, shape).astype(dtype) for k, (shape, dtype) in SHAPES.items()}


def _round(keys: KeyBundle) -> Round:
    rng = np.random.default_rng(0)
    plain = [_arrays(rng), _arrays(rng)]
    good = [
        encrypt_arrays(a, bundle=keys, weight=w, settings=SETTINGS, rng=rng)
        for a, w in zip(plain, (1.0, 0.5), strict=True)
    ]
    server = keys.public_only()
    rejected: dict[int, str] = {}
    strategy = EncryptedFedAvg(bundle=server, on_reject=rejected.__setitem__)
    strategy._layout = layout_of(plain[0])  # what configure_train records for the round
    strategy._clip, strategy._settings = SETTINGS.clip, SETTINGS
    return Round(keys, strategy, plain, good, aggregate(good, bundle=server), rejected)


@pytest.fixture(scope="module")
def rounds(ckks_keys: KeyBundle, paillier_keys: KeyBundle) -> dict[str, Round]:
    return {"ckks": _round(ckks_keys), "paillier": _round(paillier_keys)}


def _reply(node: int, arrays: ArrayRecord, examples: int = 10) -> Message:
    sent = Message(RecordDict(), dst_node_id=node, message_type="train")
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": examples})})
    return Message(content, reply_to=sent)


def _with_header(record: ArrayRecord, head: bytes) -> ArrayRecord:
    out = ArrayRecord({k: record[k] for k in record.keys() if k != HEADER_KEY})
    out[HEADER_KEY] = Array(dtype="json", shape=(len(head),), stype=HEADER_STYPE, data=head)
    return out


def _run(r: Round, bad: ArrayRecord) -> tuple[Payload | None, str | None]:
    """aggregate_train on [good, bad, good]: the sum and why node 2 was refused (or None)."""
    r.rejected.clear()
    replies = [_reply(1, r.good[0].to_arrays()), _reply(2, bad), _reply(3, r.good[1].to_arrays())]
    arrays, metrics = r.strategy.aggregate_train(1, replies)  # must not raise
    assert set(r.rejected) <= {2}, r.rejected  # an honest reply is never refused
    summed = None if arrays is None else Payload.from_arrays(arrays)
    reason = r.rejected.get(2)
    if currently_in_test_context():  # a hypothesis example: count refusals in its statistics
        event("refused" if reason is not None else "accepted (an honest-looking value)")
    return summed, reason


def _assert_refused_and_good_added(r: Round, bad: ArrayRecord) -> None:
    summed, reason = _run(r, bad)
    assert reason is not None and reason.startswith("invalid encrypted update: ")
    assert summed == r.summed  # exactly the two honest payloads were added


# --- header fields --------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers(min_value=2**62, max_value=2**80)
    | st.integers(max_value=-(2**62), min_value=-(2**80))
    | st.sampled_from([0, 16, 17, 113, 2048, 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS: list[tuple[str, ...]] = [
    ("scheme",), ("params",), ("fingerprint",), ("layout",), ("layout", "names"),
    ("layout", "shapes"), ("layout", "dtypes"), ("count",), ("weight",), ("clipped",),
    ("extra",), ("extra", "clip"), ("extra", "surprise"),
]  # fmt: skip
PAILLIER_FIELDS: list[tuple[str, ...]] = [
    ("params", "key-bits"), ("extra", "packing"), ("extra", "packing", "bits"),
    ("extra", "packing", "slot-bits"), ("extra", "packing", "per-ct"),
    ("extra", "packing", "packed"), ("extra", "max_count"),
]  # fmt: skip
CKKS_FIELDS: list[tuple[str, ...]] = [
    ("params", "scale-bits"), ("params", "poly-modulus-degree"), ("params", "coeff-mod-bit-sizes"),
]  # fmt: skip


def _set(raw: dict, path: tuple[str, ...], value: object) -> None:
    node = raw
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is _DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


_DELETE = object()


def _honest(path: tuple[str, ...], value: object) -> bool:
    """A value the server cannot tell from an honest client's: a weight or clipped count."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if path == ("weight",):
        return number and 0 < value <= 1  # type: ignore[operator]  # any fuzzed value
    if path == ("clipped",):
        return type(value) is int and 0 <= value <= 4163
    return False


@pytest.mark.parametrize("backend", ["ckks", "paillier"])
@FUZZ
@given(data=st.data())
def test_mutated_header_field_is_refused(
    rounds: dict[str, Round], backend: str, data: st.DataObject
) -> None:
    # Prepare: one header field replaced by another type or value, or removed
    r = rounds[backend]
    own = PAILLIER_FIELDS if backend == "paillier" else CKKS_FIELDS
    path = data.draw(st.sampled_from(FIELDS + own), label="field")
    value = data.draw(JSON_VALUES | st.just(_DELETE), label="value")
    record = r.good[0].to_arrays()
    raw = json.loads(bytes(record[HEADER_KEY].data))
    _set(raw, path, value)
    head = json.dumps(raw, sort_keys=True).encode()
    if head == r.good[0].header.to_bytes():
        return  # the draw left the header as it was
    # Execute
    summed, reason = _run(r, _with_header(record, head))
    # Assert
    if _honest(path, value):
        assert reason is None and summed is not None and summed.header.count == 3
    else:
        assert reason is not None, (path, value)
        assert summed == r.summed


# --- raw header bytes -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["ckks", "paillier"])
@FUZZ
@given(data=st.data())
def test_mutated_header_bytes_never_crash(
    rounds: dict[str, Round], backend: str, data: st.DataObject
) -> None:
    r = rounds[backend]
    record = r.good[0].to_arrays()
    head = bytearray(bytes(record[HEADER_KEY].data))
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "stype"]), label="how")
    if how == "flip":
        for bit in data.draw(st.lists(st.integers(0, 8 * len(head) - 1), min_size=1, max_size=4)):
            head[bit // 8] ^= 1 << (bit % 8)
    elif how == "truncate":
        head = head[: data.draw(st.integers(0, len(head) - 1))]
    elif how == "append":
        head += data.draw(st.binary(min_size=1, max_size=16))
    bad = _with_header(record, bytes(head))
    if how == "stype":
        bad[HEADER_KEY] = Array("json", (len(head),), data.draw(st.text(max_size=20)), bytes(head))
    summed, reason = _run(r, bad)
    assert summed is not None and summed.header.count in (2, 3)
    if reason is None:  # e.g. a flip inside a float digit of the weight: still a valid header
        Payload.from_arrays(bad)  # then it parses, and passed every check
    else:
        assert summed == r.summed


# --- ciphertext chunks ----------------------------------------------------------------

Mutation = Callable[[list[tuple[str, Array]], st.DataObject], list[tuple[str, Array]]]


def _chunk(data: bytes) -> Array:
    return Array(dtype="bytes", shape=(len(data),), stype=CHUNK_STYPE, data=data)


def _flip(chunks: list[tuple[str, Array]], data: st.DataObject) -> list[tuple[str, Array]]:
    i = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
    raw = bytearray(bytes(chunks[i][1].data))
    for bit in data.draw(st.lists(st.integers(0, 8 * len(raw) - 1), min_size=1, max_size=8)):
        raw[bit // 8] ^= 1 << (bit % 8)
    return [*chunks[:i], (chunks[i][0], _chunk(bytes(raw))), *chunks[i + 1 :]]


def _truncate(chunks: list[tuple[str, Array]], data: st.DataObject) -> list[tuple[str, Array]]:
    i = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
    raw = bytes(chunks[i][1].data)
    cut = raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")]
    return [*chunks[:i], (chunks[i][0], _chunk(cut)), *chunks[i + 1 :]]


def _extra(chunks: list[tuple[str, Array]], data: st.DataObject) -> list[tuple[str, Array]]:
    copy = data.draw(st.booleans(), label="copy")
    raw = (
        bytes(chunks[data.draw(st.integers(0, len(chunks) - 1))][1].data)
        if copy
        else data.draw(st.binary(max_size=600), label="bytes")
    )
    return [*chunks, (f"{CHUNK_PREFIX}{len(chunks):06d}", _chunk(raw))]


def _missing(chunks: list[tuple[str, Array]], data: st.DataObject) -> list[tuple[str, Array]]:
    i = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
    rest = chunks[:i] + chunks[i + 1 :]
    renumber = data.draw(st.booleans(), label="renumber")  # a gap, or a shorter valid sequence
    return [(f"{CHUNK_PREFIX}{j:06d}", a) for j, (_, a) in enumerate(rest)] if renumber else rest


def _rename(chunks: list[tuple[str, Array]], data: st.DataObject) -> list[tuple[str, Array]]:
    i = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
    name = data.draw(st.text(min_size=1, max_size=12), label="name")
    stype = data.draw(st.sampled_from([CHUNK_STYPE, "numpy.ndarray", ""]), label="stype")
    a = chunks[i][1]
    renamed = (name, Array(a.dtype, tuple(a.shape), stype, bytes(a.data)))
    return [*chunks[:i], renamed, *chunks[i + 1 :]]


MUTATIONS: dict[str, Mutation] = {
    "flip": _flip, "truncate": _truncate, "extra": _extra, "missing": _missing, "rename": _rename,
}  # fmt: skip


@pytest.mark.parametrize("backend", ["ckks", "paillier"])
@FUZZ
@given(data=st.data())
def test_mutated_chunks_are_refused(
    rounds: dict[str, Round], backend: str, data: st.DataObject
) -> None:
    # Prepare
    r = rounds[backend]
    record = r.good[1].to_arrays()
    chunks = [(k, record[k]) for k in record.keys() if k != HEADER_KEY]
    how = data.draw(st.sampled_from(sorted(MUTATIONS)), label="how")
    mutated = MUTATIONS[how](chunks, data)
    bad = ArrayRecord({HEADER_KEY: record[HEADER_KEY]})
    for name, array in mutated:
        bad[name] = array
    if [(k, bytes(a.data), a.stype) for k, a in mutated] == [
        (k, bytes(a.data), a.stype) for k, a in chunks
    ]:
        return  # e.g. a rename to the same name
    # Execute
    summed, reason = _run(r, bad)
    # Assert: refused, except a flipped bit that leaves a well-formed ciphertext (malleable
    # bytes no server can tell from honest ones); then it is added like any other.
    assert summed is not None
    if reason is None:
        assert how == "flip" and summed.header.count == 3
    else:
        assert summed == r.summed


# --- the cases the first fuzz found, and the honest path --------------------------------


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("extra", "packing"), None, "packing None differs"),
        (("extra", "packing"), "packed", "packing 'packed' differs"),
        (("extra", "packing", "per-ct"), 0, "packing"),
        (("extra", "packing", "bits"), 11, "packing"),
        (("extra", "packing", "slot-bits"), 64, "packing"),
        (("extra", "packing", "per-ct"), 1, "packing"),
        (("extra", "packing", "packed"), 1, "packing"),
        (("extra", "max_count"), 100, "max_count 100 differs from this round's 3"),
        (("extra", "max_count"), "3", "max_count '3' differs"),
        (("count",), 1.0, "count must be an integer"),
        (("weight",), "1", "weight must be a finite number"),
        (("extra", "clip"), 1, "clipped to 1, not to 1.0"),
    ],
)
def test_paillier_header_against_the_servers_own_plan(
    rounds: dict[str, Round], path: tuple[str, ...], value: object, reason: str
) -> None:
    r = rounds["paillier"]
    record = r.good[0].to_arrays()
    raw = json.loads(bytes(record[HEADER_KEY].data))
    _set(raw, path, value)
    bad = _with_header(record, json.dumps(raw).encode())
    summed, got = _run(r, bad)
    assert got is not None and reason in got, got
    assert summed == r.summed


def test_check_contribution_raises_payload_error_only(rounds: dict[str, Round]) -> None:
    r = rounds["paillier"]
    server = r.keys.public_only()
    check_contribution(r.good[0], bundle=server, settings=SETTINGS, layout=r.strategy._layout)
    other_plan = EncodeSettings(clip=1.0, bits=12, max_count=3)
    with pytest.raises(PayloadError, match="packing"):
        check_contribution(r.good[0], bundle=server, settings=other_plan, layout=r.strategy._layout)


@pytest.mark.parametrize("backend", ["ckks", "paillier"])
def test_honest_replies_add_up_to_the_weighted_mean(rounds: dict[str, Round], backend: str) -> None:
    r = rounds[backend]
    summed, reason = _run(r, r.good[0].to_arrays())
    assert reason is None and summed is not None and summed.header.count == 3
    first, second = r.plain
    got = decrypt_arrays(summed, bundle=r.keys)
    for k in SHAPES:
        want = (2 * 1.0 * first[k].astype(np.float64) + 0.5 * second[k]) / 2.5
        assert np.abs(got[k] - want).max() <= 1e-3
