"""Client-side SecAgg+ mod: answers the protocol stages, masks the outgoing update.

Put it first in ``ClientApp(mods=[secagg_mod, ...])``: it answers the key, share,
signing and unmasking stages itself (the app's train function never sees them) and,
at the masked-input stage, masks what the inner mods and the train function return,
after any DP noise. The round's parameters arrive in the ``flwr-privacy.secagg``
record the server's ``SecAggPlus`` writes, and are checked against this client's own
floors and trust anchor, which come from its **node config**, never from a message:
``secagg-key`` and ``secagg-roster`` (``python -m flwr_privacy.keys roster``) and the
optional ``secagg-min-*`` floors (``flwr_privacy.secagg.floors``). The client's round
secrets live in its ``context.state`` between stages (the SuperNode keeps it; in a
deployment every stage is a fresh ClientApp process).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from flwr_privacy.records import ARRAYS, METRICS, SECAGG_RECORD, flatten, settings_record
from flwr_privacy.secagg.crypto import SecAggError
from flwr_privacy.secagg.encoding import FixedPoint
from flwr_privacy.secagg.floors import ClientFloors
from flwr_privacy.secagg.identity import NODE_KEY, NODE_ROSTER, Trust
from flwr_privacy.secagg.protocol import ClientSession, RoundParams, bytes_to_ids
from flwr_privacy.secagg.stages import (
    HELLO,
    KEYS,
    MASK,
    SERVER_FIX,
    SHARES,
    SIGN,
    SIM_TRUST_DIR,
    UNMASK,
    adverts_from,
    id_map,
    id_map_values,
    read,
)

__all__ = [
    "LAST_KEY",
    "Mod",
    "NO_ANCHOR",
    "SESSION_KEY",
    "ddg_plan_of",
    "make_secagg_mod",
    "secagg_mod",
]

SESSION_KEY = "flwr-privacy.secagg-session"  # context.state: this node's round secrets
LAST_KEY = "flwr-privacy.secagg-last"  # context.state: the last round this node masked in
Mod = Callable[[Message, Context, ClientAppCallable], Message]
NO_ANCHOR = (
    "this SuperNode has no SecAgg+ trust anchor: start it with --node-config "
    f"\"{NODE_KEY}='<dir>/<identity>.key' {NODE_ROSTER}='<dir>/roster.json'\" from "
    "'python -m flwr_privacy.keys roster --out <dir> --clients <identity>,...' (in a "
    "simulation only, make_secagg_mod(simulated_trust=True) accepts per-run keys)"
)


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


def _last_masked(context: Context) -> int:
    record = context.state.config_records.get(LAST_KEY)
    return int(record["round"]) if record is not None else -1  # type: ignore[arg-type]


def _trust(context: Context, record: ConfigRecord, simulated: bool) -> Trust:
    trust = Trust.from_node_config(context.node_config)
    if trust is not None:
        return trust
    where = record.get(SIM_TRUST_DIR)
    if simulated and isinstance(where, str):
        return Trust.simulated_from(where, f"node-{context.node_id}")
    raise SecAggError(NO_ANCHOR)


def make_secagg_mod(
    *, required: bool = True, simulated_trust: bool = False, floors: ClientFloors | None = None
) -> Mod:
    """The SecAgg+ client mod.

    Parameters
    ----------
    required : bool
        A train message without the server's SecAgg record is an error reply
        (the server is not aggregating securely: refuse to send the update).
        ``False`` passes such messages through (apps where SecAgg is optional).
    simulated_trust : bool
        Without ``secagg-key`` / ``secagg-roster`` in node config, accept the per-run
        keys a simulation's server layer deals (it then holds every key: no protection
        against a lying server). Node config, when set, always wins.
    floors : ClientFloors, optional
        This client's lowest accepted round parameters; default: from node config
        ``secagg-min-*`` keys, else ``ClientFloors()``.
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
            trust = _trust(context, record, simulated_trust)
            stage = read(record, "stage", str, who)
            if stage == HELLO:
                return _answer(msg, {"identity": trust.key.identity,
                                     "simulated": trust.simulated})  # fmt: skip
            round_ = read(record, "round", int, who)
            session = read(record, "session", bytes, who)
            if stage == KEYS:
                if round_ <= _last_masked(context):
                    raise SecAggError(f"{who}: keys for round {round_}, but this node already "
                                      f"masked an input in round {_last_masked(context)}: "
                                      "one masked input a round, rounds only increase")  # fmt: skip
                params = RoundParams.from_record(record, session=session, round_=round_, who=who)
                mine = floors or ClientFloors.from_node_config(context.node_config)
                state = ClientSession.start(
                    node=context.node_id, params=params, trust=trust, floors=mine
                )
                _store(context, state)
                c, s, commit, sig = state.advert(trust)
                return _answer(msg, {"c-pk": c, "s-pk": s, "commit": commit, "sig": sig})
            state = _session(context, who)
            if stage == SHARES:
                cts = state.share_keys(adverts_from(record, who), trust, round_=round_,
                                       session=session)  # fmt: skip
                _store(context, state)
                return _answer(msg, id_map_values(cts, "ids", "cts"))
            if stage == MASK:
                return _masked_reply(msg, context, call_next, state, record, who)
            if stage == SIGN:
                survivors = bytes_to_ids(read(record, "survivors", bytes, who))
                sig = state.sign_survivors(survivors, trust, round_=round_, session=session)
                _store(context, state)
                return _answer(msg, {"sig": sig})
            if stage == UNMASK:
                shares = state.unmask(
                    bytes_to_ids(read(record, "survivors", bytes, who)),
                    id_map(record, "signer-ids", "signatures", who),
                    trust,
                    round_=round_,
                    session=session,
                )
                _store(context, state)
                return _answer(msg, id_map_values(shares, "ids", "shares"))
            raise SecAggError(f"{who}: unknown SecAgg stage {stage!r}")
        except SecAggError as e:
            return _failed(msg, str(e))
        except (ValueError, TypeError, KeyError, OverflowError) as e:  # a malformed value
            return _failed(msg, f"{who}: malformed SecAgg record ({type(e).__name__}: {e})")

    return secagg_mod


secagg_mod = make_secagg_mod()
secagg_mod.__doc__ = "The SecAgg+ client mod with default settings: see ``make_secagg_mod``."


def _finite(value: object, name: str, who: str, *, positive: bool = True) -> float:
    """``value`` as a finite float (> 0 if ``positive``); SecAggError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SecAggError(f"{who}: '{name}' must be a number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v):
        raise SecAggError(f"{who}: '{name}' is NaN")
    if not math.isfinite(v) or (positive and v <= 0):
        raise SecAggError(f"{who}: '{name}' = {v!r}; allowed: a finite number{' > 0' * positive}")
    return v


def ddg_plan_of(params: RoundParams, who: str) -> Any:
    """The distributed DP plan of a round, with the honest count this client verified.

    The honest count is ``|P| - max_dropouts - (t - 1)`` from the signed parameters (every
    honest client refuses to unmask a smaller survivor set), never the server's claim.
    """
    from flwr_privacy.dp.ddg import DdgPlan

    enc = params.encoding
    try:
        plan = DdgPlan.from_record(enc)
    except (ValueError, TypeError) as e:
        raise SecAggError(f"{who}: the distributed DP plan is incomplete: {e}") from None
    for name in ("gamma", "sigma", "l2_sensitivity"):
        _finite(getattr(plan, name), f"ddg-{name.replace('_', '-')}", who)
    if plan.dim != params.size - 1 or plan.bits != params.mod_bits:
        raise SecAggError(f"{who}: the DP plan is for {plan.dim} values at {plan.bits} bits; the "
                          f"round has {params.size - 1} at {params.mod_bits}")  # fmt: skip
    if params.max_dropouts is None:
        raise SecAggError(f"{who}: a distributed DP round must say its max-dropouts")
    honest = len(params.participants) - params.max_dropouts - (params.threshold - 1)
    if honest < 1:
        raise SecAggError(f"{who}: the round's parameters leave {honest} honest clients")
    return DdgPlan(gamma=plan.gamma, sigma=plan.sigma, l2_sensitivity=plan.l2_sensitivity,
                   honest=honest, dim=plan.dim, bits=plan.bits)  # fmt: skip


def _encode(delta: np.ndarray, params: RoundParams, metrics: Mapping[str, Any], who: str,
            mod_bits: int) -> tuple[np.ndarray, int]:  # fmt: skip
    """The integer vector to mask (the last value counts weight or clients), clipped count."""
    bad = int(np.count_nonzero(~np.isfinite(delta)))
    if bad:
        nan = int(np.count_nonzero(np.isnan(delta)))
        raise SecAggError(f"{who}: the update has {nan} NaN and {bad - nan} infinite values: "
                          "nothing to aggregate (did training diverge?)")  # fmt: skip
    # Stochastic rounding needs unbiased, not secret, randomness; a fresh OS seed costs nothing.
    rng = np.random.default_rng(secrets.randbits(128))
    enc = params.encoding
    if enc["kind"] == "ddg":  # distributed DP: grid + discrete Gaussian
        from flwr_privacy.dp import ddg

        plan = ddg_plan_of(params, who)
        try:
            shares = np.append(ddg.encode(delta, plan, rng), 1)  # the last value counts clients
        except ValueError as e:
            raise SecAggError(f"{who}: distributed DP encoding failed: {e}") from None
        return (shares % (1 << mod_bits)).astype(np.uint32), 0
    weight_key = enc.get("weight-key")
    if not isinstance(weight_key, str) or weight_key not in metrics:
        raise SecAggError(f"{who}: the train reply's '{METRICS}' record lacks the weight "
                          f"'{weight_key}'")  # fmt: skip
    raw = _finite(metrics[weight_key], f"{METRICS}.{weight_key}", who, positive=False)
    if raw < 0:
        raise SecAggError(f"{who}: the weight '{weight_key}' = {raw!r} is negative")
    scale = _finite(enc.get("weight-scale"), "weight-scale", who)
    encoding = FixedPoint(clip=_finite(enc.get("clip"), "clip", who),
                          quant_bits=int(enc["quant-bits"]))  # fmt: skip
    if encoding.weight(min(raw / scale, 1.0))[0] == 0:  # it would add nothing to the sum
        raise SecAggError(f"{who}: its weight '{weight_key}' = {raw!r} over the weight scale "
                          f"{scale!r} rounds to 0: a sum with it would carry the others' "
                          "updates only; refused")  # fmt: skip
    return encoding.encode(delta, min(raw / scale, 1.0), rng)


def _inner_message(msg: Message, state: ClientSession, who: str) -> Message:
    """The message the inner mods and train see: the server's record replaced by what this
    client verified (the signed encoding; for distributed DP the plan with the honest count
    it checked). Nothing of the mask-stage record reaches them unverified."""
    if state.params.encoding.get("kind") != "ddg":
        msg.content[SECAGG_RECORD] = ConfigRecord({"encoding": "fixed"})
        return msg
    plan = ddg_plan_of(state.params, who)
    msg.content[SECAGG_RECORD] = ConfigRecord({"encoding": "ddg", **plan.to_record()})
    return msg


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
    state.check_ciphertexts(cts, round_=round_, session=session)  # before training
    if ARRAYS not in msg.content.array_records:
        raise SecAggError(f"{who}: the masked-input stage carries no global model '{ARRAYS}'")
    reference = flatten(msg.content.array_records[ARRAYS])
    keys = list(msg.content.array_records[ARRAYS].keys())
    if reference.size + 1 != state.size:
        raise SecAggError(f"{who}: the global model has {reference.size} values, the round's "
                          f"signed parameters {state.size - 1}")  # fmt: skip
    reply = call_next(_inner_message(msg, state, who), context)
    if reply.has_error():
        return reply  # the server unmasks without this node (its neighbours hold its shares)
    start = time.perf_counter()
    arrays = reply.content.array_records.get(ARRAYS)
    metrics = reply.content.metric_records.get(METRICS)
    if arrays is None or list(arrays.keys()) != keys or metrics is None:
        raise SecAggError(
            f"{who}: the train reply needs the model '{ARRAYS}' (same arrays as "
            f"the global model) and a '{METRICS}' record"
        )
    delta = flatten(arrays) - reference
    if delta.size + 1 != state.size:
        raise SecAggError(
            f"{who}: the update has {delta.size} values, the round expects {state.size - 1}"
        )
    values, clipped = _encode(delta, state.params, metrics, who, state.mod_bits)
    masked = state.mask_input(values, cts, round_=round_, session=session)
    _store(context, state)
    context.state[LAST_KEY] = ConfigRecord({"round": round_})
    del reply.content.array_records[ARRAYS]
    reply.content[SECAGG_RECORD] = ConfigRecord({"masked": masked, "clipped": clipped})
    metrics["secagg-mask-s"] = time.perf_counter() - start
    return reply
