"""Client-side SecAgg+ mod: answers the protocol stages, masks the outgoing update.

Put it first in ``ClientApp(mods=[secagg_mod, ...])``: it answers the key and
share stages and the unmasking itself (the app's train function never sees
them) and, at the masked-input stage, masks what the inner mods and the train
function return, after any DP noise. Settings arrive only as the
``flwr-privacy.secagg`` record the server's ``SecAggPlus`` writes; the
client's round secrets live in its ``context.state`` between stages (the
SuperNode keeps it; in a deployment every stage is a fresh ClientApp process).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from flwr_privacy.records import (
    ARRAYS,
    METRICS,
    SECAGG_RECORD,
    as_float,
    flatten,
    settings_record,
)
from flwr_privacy.secagg.crypto import SecAggError
from flwr_privacy.secagg.encoding import FixedPoint
from flwr_privacy.secagg.protocol import ClientSession, bytes_to_ids
from flwr_privacy.secagg.stages import (
    KEYS,
    MASK,
    SERVER_FIX,
    SHARES,
    UNMASK,
    id_map,
    id_map_values,
    read,
)

SESSION_KEY = "flwr-privacy.secagg-session"  # context.state: this node's round secrets
Mod = Callable[[Message, Context, ClientAppCallable], Message]


def _failed(msg: Message, reason: str) -> Message:
    return Message(
        Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"secagg_mod: {reason}"), reply_to=msg
    )


def _answer(msg: Message, values: dict) -> Message:
    return Message(RecordDict({SECAGG_RECORD: ConfigRecord(values)}), reply_to=msg)


def _session(context: Context, who: str) -> ClientSession:
    if SESSION_KEY not in context.state:
        raise SecAggError(f"{who}: no SecAgg session in this node's state (stage out of order)")
    return ClientSession.from_record(context.state.config_records[SESSION_KEY])


def _store(context: Context, session: ClientSession) -> None:
    context.state[SESSION_KEY] = ConfigRecord(session.to_record())


def make_secagg_mod(*, required: bool = True) -> Mod:
    """The SecAgg+ client mod.

    Parameters
    ----------
    required : bool
        A train message without the server's SecAgg record is an error reply
        (the server is not aggregating securely: refuse to send the update).
        ``False`` passes such messages through (apps where SecAgg is optional).
    """

    def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        record = settings_record(msg, SECAGG_RECORD)
        if record is None:
            if required:
                return _failed(msg, f"the message has no '{SECAGG_RECORD}' record; {SERVER_FIX}")
            return call_next(msg, context)
        who = f"node {context.node_id}"
        try:
            stage = read(record, "stage", str, who)
            round_ = read(record, "round", int, who)
            session = read(record, "session", bytes, who)
            if stage == KEYS:
                state = ClientSession.start(
                    node=context.node_id,
                    round_=round_,
                    session=session,
                    threshold=read(record, "threshold", int, who),
                    neighbours=bytes_to_ids(read(record, "neighbours", bytes, who)),
                    mod_bits=read(record, "mod-bits", int, who),
                    size=read(record, "size", int, who),
                )
                _store(context, state)
                c_pk, s_pk = state.public_keys
                return _answer(msg, {"c-pk": c_pk, "s-pk": s_pk})
            state = _session(context, who)
            if stage == SHARES:
                public_c = id_map(record, "public-ids", "public-c", who)
                public_s = id_map(record, "public-ids", "public-s", who)
                public = {j: (public_c[j], public_s[j]) for j in public_c}
                cts = state.share_keys(public, round_=round_, session=session)
                _store(context, state)
                return _answer(msg, id_map_values(cts, "ids", "cts"))
            if stage == MASK:
                return _masked_reply(msg, context, call_next, state, record, who)
            if stage == UNMASK:
                shares = state.unmask(
                    bytes_to_ids(read(record, "survivors", bytes, who)),
                    bytes_to_ids(read(record, "dropped", bytes, who)),
                    round_=round_,
                    session=session,
                )
                _store(context, state)
                return _answer(msg, id_map_values(shares, "ids", "shares"))
            raise SecAggError(f"{who}: unknown SecAgg stage {stage!r}")
        except SecAggError as e:
            return _failed(msg, str(e))

    return secagg_mod


secagg_mod = make_secagg_mod()
secagg_mod.__doc__ = "The SecAgg+ client mod with default settings: see ``make_secagg_mod``."


def _masked_reply(
    msg: Message,
    context: Context,
    call_next: ClientAppCallable,
    state: ClientSession,
    record: ConfigRecord,
    who: str,
) -> Message:
    """Stage 3: train, then send ``mask(encode(w * (model - global)))`` instead of the model."""
    cts = id_map(record, "ct-ids", "cts", who)
    round_, session = read(record, "round", int, who), read(record, "session", bytes, who)
    if ARRAYS not in msg.content.array_records:
        raise SecAggError(f"{who}: the masked-input stage carries no global model '{ARRAYS}'")
    reference = flatten(msg.content.array_records[ARRAYS])
    keys = list(msg.content.array_records[ARRAYS].keys())
    reply = call_next(msg, context)
    if reply.has_error():
        return reply  # the server unmasks without this node (its neighbours hold its shares)
    start = time.perf_counter()
    arrays = reply.content.array_records.get(ARRAYS)
    metrics = reply.content.metric_records.get(METRICS)
    weight_key = read(record, "weight-key", str, who)
    if (
        arrays is None
        or list(arrays.keys()) != keys
        or metrics is None
        or weight_key not in metrics
    ):
        raise SecAggError(
            f"{who}: the train reply needs the model '{ARRAYS}' (same arrays as "
            f"the global model) and a '{METRICS}' record with '{weight_key}'"
        )
    delta = flatten(arrays) - reference
    if delta.size + 1 != state.size:
        raise SecAggError(
            f"{who}: the update has {delta.size} values, the round expects {state.size - 1}"
        )
    # Stochastic rounding needs unbiased, not secret, randomness; a fresh OS seed costs nothing.
    rng = np.random.default_rng(secrets.randbits(128))
    if read(record, "encoding", str, who) == "ddg":  # distributed DP: grid + discrete Gaussian
        from flwr_privacy.dp import ddg

        plan = ddg.DdgPlan.from_record(record)
        shares = np.append(ddg.encode(delta, plan, rng), 1)  # the last value counts clients
        values, clipped = (shares % (1 << state.mod_bits)).astype(np.uint32), 0
    else:
        weight = min(as_float(metrics[weight_key]) / read(record, "weight-scale", float, who), 1.0)
        encoding = FixedPoint(
            clip=read(record, "clip", float, who), quant_bits=read(record, "quant-bits", int, who)
        )
        values, clipped = encoding.encode(delta, weight, rng)
    masked = state.mask_input(values, cts, round_=round_, session=session)
    _store(context, state)
    del reply.content.array_records[ARRAYS]
    reply.content[SECAGG_RECORD] = ConfigRecord({"masked": masked, "clipped": clipped})
    metrics["secagg-mask-s"] = time.perf_counter() - start
    return reply
