"""Client-side fixed clipping for central DP: the update leaves the client clipped.

Central DP's noise covers one clip per client only if every update is clipped. In
plaintext the server clips (``LedgeredCentralDp``); under server-blind HE it cannot
read the updates (``EncryptedCentralDp``), so each client clips its own, as Flower's
client-side fixed clipping does, with Flower's own ``compute_clip_model_update``.

Flower's ``fixedclipping_mod`` is not reused as is: it refuses any message with more
than one ConfigRecord (ours carry ``config`` plus each layer's record) and reads its clip
from a key of that single record, not from the ``flwr-privacy.dp`` record. Sit inside
the HE mod (``mods=[he_mod, central_clip_mod, ...]``): it clips the plaintext update that
``he_mod`` then encrypts. ``local_dp_mod`` does the same for ``mode = "central"``.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.supercore.differential_privacy import compute_clip_model_update

from flwr_privacy.dp.client import dp_settings
from flwr_privacy.records import ARRAYS, DP_RECORD

__all__ = ["MOD_NAME", "central_clip_mod", "clipped_reply"]

MOD_NAME = "central_clip_mod"


def _failed(msg: Message, reason: str) -> Message:
    error = Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"{MOD_NAME}: {reason}")
    return Message(error, reply_to=msg)


def clipped_reply(
    msg: Message, context: Context, call_next: ClientAppCallable, clip: float
) -> Message:
    """Run ``call_next``; clip the L2 norm of the reply's change to the received model."""
    sent = msg.content.array_records.get(ARRAYS)
    if sent is None:
        return _failed(msg, f"the train message has no '{ARRAYS}' ArrayRecord to clip against")
    reference = [np.array(a.numpy(), copy=True) for a in sent.values()]
    names = list(sent.keys())
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    out = reply.content.array_records.get(ARRAYS)
    if out is None or list(out.keys()) != names:
        return _failed(reply, f"the reply's '{ARRAYS}' do not match the received model's arrays")
    update = [a.numpy() for a in out.values()]
    compute_clip_model_update(update, reference, clip)  # Flower's: in place, param1 = ref + clip
    reply.content[ARRAYS] = ArrayRecord(
        {k: Array(np.ascontiguousarray(v)) for k, v in zip(names, update, strict=True)}
    )
    return reply


def central_clip_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Clip the outgoing update to ``max-grad-norm`` when the DP record says ``central``.

    Other modes, and messages without the record, pass through unchanged.
    """
    if msg.metadata.message_type != MessageType.TRAIN or msg.has_error():
        return call_next(msg, context)
    try:
        dp = dp_settings(msg)
    except ValueError as e:
        return _failed(msg, f"the {DP_RECORD!r} record is inconsistent: {e}")
    if dp is None or dp.mode != "central":
        return call_next(msg, context)
    return clipped_reply(msg, context, call_next, dp.max_grad_norm)
