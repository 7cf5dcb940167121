"""Client mod for local DP: clip the outgoing update and add noise to it, with a ledger.

Two ways to get one:

- ``make_local_dp_mod(epsilon=3.0, delta=1e-5, clip=1.0, rounds=3)``: explicit settings,
  for any Flower app (``ClientApp(mods=[make_local_dp_mod(...)])``);
- ``local_dp_mod``: settings from the ``flwr-privacy.dp`` record the server-side layer
  (``BudgetGuard(strategy, dp=DpSettings(mode="local", ...))``) writes on every message.

Per train message the mod plans this round's release (the noise spreads the budget
over ``rounds`` rounds), declines with a ``BUDGET_EXHAUSTED`` error reply when it would
exceed the budget, noises the reply's update and adds ``dp-epsilon`` / ``dp-delta`` to
its metrics. Gaussian noise is Flower's ``LocalDpMod`` (clip the L2 norm of the update,
sensitivity ``2 * clip``); Laplace is ``flwr_privacy.dp.mechanisms.laplace_update``
(L1 clip). Put it inside an HE mod, so the noisy update is what gets encrypted.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.mod import LocalDpMod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode

from flwr_privacy.dp.client import (
    BudgetExhausted,
    Release,
    check_budget,
    commit,
    declined,
    dp_settings,
    gaussian_release,
    ledger_of,
    noise_seed,
)
from flwr_privacy.dp.mechanisms import flower_epsilon, laplace_update
from flwr_privacy.dp.settings import DpSettings
from flwr_privacy.mods.central_clip import clipped_reply
from flwr_privacy.records import ARRAYS, CONFIG, DP_RECORD, METRICS, as_int

__all__ = ["MOD_NAME", "local_dp_mod", "make_local_dp_mod"]

MOD_NAME = "local_dp_mod"
_FIX = (
    "the server must wrap its strategy in BudgetGuard(strategy, dp=DpSettings(mode='local', "
    "...)), or build the client mod with make_local_dp_mod(epsilon=..., delta=..., clip=..., "
    "rounds=...)"
)


def make_local_dp_mod(
    *,
    epsilon: float,
    delta: float,
    clip: float,
    rounds: int,
    mechanism: str = "gaussian",
    noise_multiplier: float = 0.0,
    accountant: str = "rdp",
) -> Mod:
    """A local-DP mod with these settings (keyword-only); ValueError names a bad one.

    Parameters
    ----------
    epsilon, delta
        This client's budget for the whole run; it declines the round that would exceed it.
    clip
        Norm bound of the update (its change to the received model): L2 for
        ``mechanism="gaussian"``, L1 for ``"laplace"``.
    rounds
        Rounds the noise is planned over.
    mechanism
        ``"gaussian"`` (Flower's ``LocalDpMod``) or ``"laplace"``.
    noise_multiplier
        Gaussian only: a fixed noise multiplier instead of the planned one (0).
    accountant
        ``"rdp"`` or ``"prv"`` (Opacus), for Gaussian releases.

    Examples
    --------
    >>> mod = make_local_dp_mod(epsilon=3.0, delta=1e-5, clip=1.0, rounds=30)
    >>> app = ClientApp(mods=[mod])  # doctest: +SKIP
    """
    dp = DpSettings(mode="local", epsilon=epsilon, delta=delta, rounds=rounds,
                    max_grad_norm=clip, l1_clip=clip, local_mechanism=mechanism,
                    noise_multiplier=noise_multiplier, accountant=accountant)  # fmt: skip

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        return _noised(msg, context, call_next, dp)

    mod.__name__ = mod.__qualname__ = MOD_NAME
    return mod


def local_dp_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Local DP with the settings of the message's ``flwr-privacy.dp`` record.

    Acts when the record says ``mode = "local"``; with ``"central"`` it clips the update
    (``central_clip_mod``); other modes pass through. A train message without the record
    gets an Error reply naming the fix.
    """
    if msg.metadata.message_type != MessageType.TRAIN or msg.has_error():
        return call_next(msg, context)
    try:
        dp = dp_settings(msg)
    except ValueError as e:
        return _failed(msg, f"the {DP_RECORD!r} record is inconsistent: {e}; {_FIX}")
    if dp is None:
        return _failed(msg, f"the train message has no {DP_RECORD!r} record; {_FIX}")
    if dp.mode == "central":  # the server cannot clip what it cannot read (HE): clip here
        return clipped_reply(msg, context, call_next, dp.max_grad_norm)
    if dp.mode != "local":
        return call_next(msg, context)
    return _noised(msg, context, call_next, dp)


def _failed(msg: Message, reason: str) -> Message:
    error = Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"{MOD_NAME}: {reason}")
    return Message(error, reply_to=msg)


def _noised(
    msg: Message, context: Context, call_next: ClientAppCallable, dp: DpSettings
) -> Message:
    """Check the budget, noise the reply's update, record the release."""
    ledger = ledger_of(context, dp)
    if dp.local_mechanism == "gaussian":
        release = gaussian_release(dp, sample_rate=1.0, steps=1)
    else:
        release = {"laplace": [(dp.epsilon - ledger.input_epsilon) / dp.rounds]}
    try:
        check_budget(ledger, release, dp)
    except BudgetExhausted as e:
        return declined(msg, e)
    if dp.local_mechanism == "gaussian":
        z, clip = release["gaussian"][0][0], dp.max_grad_norm
        inner = LocalDpMod(clipping_norm=clip, sensitivity=2 * clip,
                           epsilon=flower_epsilon(z, dp.delta), delta=dp.delta)  # fmt: skip
        reply = inner(msg, context, call_next)
    else:
        salt = _round_salt(msg, ledger.rounds + 1)
        seed = noise_seed(context, dp, salt)
        reply = _laplace_noised(msg, context, call_next, dp, release, seed)
    if reply.has_error():
        return reply
    for key, value in commit(context, dp, ledger, release).items():
        reply.content.metric_records[METRICS][key] = value
    return reply


def _round_salt(msg: Message, default: int) -> int:
    """Flower's ``server-round`` from the message config when there, else ``default``."""
    cfg = msg.content.config_records.get(CONFIG)
    return as_int(cfg.get("server-round", default)) if cfg is not None else default


def _laplace_noised(
    msg: Message, context: Context, call_next: ClientAppCallable, dp: DpSettings,
    release: Release, seed: int,
) -> Message:  # fmt: skip
    sent = {k: a.numpy().copy() for k, a in msg.content.array_records[ARRAYS].items()}
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    update = {k: a.numpy() for k, a in reply.content.array_records[ARRAYS].items()}
    noisy = laplace_update(update, sent, l1_clip=dp.l1_clip, epsilon=release["laplace"][0],
                           rng=np.random.default_rng(seed))  # fmt: skip
    reply.content[ARRAYS] = ArrayRecord(
        {k: Array(np.ascontiguousarray(v)) for k, v in noisy.items()}
    )
    return reply
