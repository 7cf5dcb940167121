"""Server-side checks of one client's payload before it meets the others.

Everything in a client's header is compared with what this server itself
expects: its key and parameters, the global model's layout, its clip, the
encoding (Paillier packing plan) its own settings give, the weight bounds and
one contribution. Every ciphertext's form is checked by the scheme's backend.
Any mismatch is a ``PayloadError`` naming the field, so one bad reply is
refused on its own instead of failing the sum of a whole round.
"""

from __future__ import annotations

import math
from typing import Any

from flwr_privacy.he.backend import EncodeSettings, backend_for
from flwr_privacy.he.bundle import KeyBundle
from flwr_privacy.he.payload import KeyMismatchError, Layout, Payload, PayloadError


def check_compatible(payload: Payload, bundle: KeyBundle) -> None:
    """Refuse a payload made with another scheme, parameters or key generation."""
    h = payload.header
    if h.scheme != bundle.backend:
        raise PayloadError(f"payload scheme {h.scheme!r} but this party uses {bundle.backend!r}")
    if h.fingerprint != bundle.fingerprint:
        raise KeyMismatchError(
            f"payload was encrypted under key {h.fingerprint}, this party holds key "
            f"{bundle.fingerprint} (server and clients use different key generations)"
        )
    if h.params != bundle.params:
        raise PayloadError(f"payload parameters {h.params} differ from the key's {bundle.params}")


def validate_payload(payload: Payload, *, bundle: KeyBundle) -> None:
    """Check tag, chunk count and every ciphertext's form (not the encoding: see below)."""
    check_compatible(payload, bundle)
    backend_for(bundle.backend).check_chunks(list(payload.chunks), bundle, payload.header)


def _same(got: Any, want: Any) -> bool:
    """Equal values of equal JSON types: ``True`` is not ``1``, ``"16"`` is not ``16``."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, int | float):
        return isinstance(got, type(want)) and got == want
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(_same(got[k], want[k]) for k in want)
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(_same(g, w) for g, w in zip(got, want, strict=True))
        )
    return type(got) is type(want) and got == want


def check_encoding(extra: object, expected: dict[str, Any]) -> None:
    """``extra`` must hold exactly the fields of ``expected``, each of the same type and value."""
    if not isinstance(extra, dict):
        raise PayloadError(f"its encoding fields are {type(extra).__name__}, not a dict")
    unknown = sorted(str(k) for k in extra.keys() - expected.keys())
    if unknown:
        raise PayloadError(f"its header has unknown encoding fields {unknown}")
    for key, want in expected.items():
        if key not in extra:
            raise PayloadError(f"its header lacks the encoding field {key!r}")
        if not _same(extra[key], want):
            if key == "clip":
                raise PayloadError(f"it was clipped to {extra[key]!r:.40}, not to {want}")
            raise PayloadError(f"its {key} {extra[key]!r:.80} differs from this round's {want}")


def check_contribution(
    payload: Payload, *, bundle: KeyBundle, settings: EncodeSettings, layout: Layout
) -> None:
    """Refuse one client's payload unless every header field is what this server expects.

    ``settings`` are the server's own encoding settings of the round (its clip,
    bits, packing, ``max_count``), ``layout`` the global model's. Raises
    ``PayloadError`` (``KeyMismatchError`` for another key generation) with the
    reason; never another exception for a malformed payload.
    """
    h = payload.header
    check_compatible(payload, bundle)
    if h.layout != layout:
        raise PayloadError("its arrays (names, shapes, dtypes) differ from the global model")
    if type(h.count) is not int or h.count != 1:
        raise PayloadError(f"a client payload must hold 1 contribution, not {h.count!r:.40}")
    weight = h.weight if isinstance(h.weight, int | float) else math.nan
    if isinstance(weight, bool) or not (math.isfinite(weight) and 0 < weight <= 1):
        raise PayloadError(f"its weight {h.weight!r:.40} is outside (0, 1]")
    if type(h.clipped) is not int or not 0 <= h.clipped <= layout.size:
        raise PayloadError(f"its clipped count {h.clipped!r:.40} is outside [0, {layout.size}]")
    backend = backend_for(bundle.backend)
    expected = {"clip": float(settings.clip), **backend.encoding(bundle, settings)}
    check_encoding(h.extra, expected)
    backend.check_chunks(list(payload.chunks), bundle, h)
