"""Client-side DP: the ledger in ``context.state``, budgets, private training, local-DP mod.

Task code never sees any of this. Per round a client plans its release, checks
that its ledger plus that release stays within ``dp.epsilon`` (otherwise it
declines with a ``BUDGET_EXHAUSTED`` error reply), trains or noises, then
records what it released. Noise seeds are a per-client secret kept in
``context.state`` (anyone who knows the seed can subtract the noise);
``dp.seeded-noise`` derives them from the public run seed instead, which
makes experiments repeatable and voids the guarantee against the server.
"""

from __future__ import annotations

import math
import secrets
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType
from flwr.clientapp.mod import LocalDpMod
from flwr.clientapp.typing import ClientAppCallable
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from app.dp_config import DpConfig
from app.records import ARRAYS, CONFIG, METRICS, STANDARDIZE_MEAN, STANDARDIZE_STD
from flwr_privacy.dp import BUDGET_EXHAUSTED, DELTA_KEY, EPSILON_KEY, DpSgd, PrivacyLedger
from flwr_privacy.dp.input import FeatureBounds, perturb_records
from flwr_privacy.dp.laplace import epsilon_schedule, train_laplace_sgd
from flwr_privacy.dp.ledger import gaussian_epsilon
from flwr_privacy.dp.mechanisms import flower_epsilon, laplace_update
from flwr_privacy.dp.sgd import planned_noise, sampling, train_dp_sgd
from tasks import ClientData, Task, TrainSettings

STATE_KEY = "dp"
MOMENTUM_KEY, MOMENTUM_ROUND_KEY = "dp-previous-model", "dp-previous-round"
ALONE_KEY = "dp-epsilon-alone"  # distributed DP: epsilon of one client's share on its own
Release = dict[str, list[Any]]  # {"gaussian": [(z, q, steps)], "laplace": [eps, ...]}


class BudgetExhausted(RuntimeError):
    """This client's next round would take its epsilon past ``dp.epsilon``."""


def _state(context: Context, dp: DpConfig) -> ConfigRecord:
    if STATE_KEY not in context.state:
        ledger = PrivacyLedger(
            delta=dp.delta, accountant=dp.accountant, input_epsilon=dp.input_epsilon
        )
        _store(context, ledger, secrets.randbits(62))
    return context.state[STATE_KEY]


def _store(context: Context, ledger: PrivacyLedger, seed: int) -> None:
    record = ConfigRecord(ledger.state_dict())
    record["noise-seed"] = seed
    context.state[STATE_KEY] = record


def ledger_of(context: Context, dp: DpConfig) -> PrivacyLedger:
    """This client's ledger, as kept across rounds in its context state."""
    return PrivacyLedger.from_state_dict(_state(context, dp))


def noise_seed(context: Context, cfg: ConfigRecord, dp: DpConfig, salt: int) -> int:
    """Secret per client (public and repeatable under ``dp.seeded-noise``), distinct per salt."""
    secret = int(_state(context, dp)["noise-seed"])
    base = int(cfg["seed"]) if dp.seeded_noise else secret
    node = int(context.node_config.get("partition-id", context.node_id))
    return int(np.random.default_rng([base, node, salt]).integers(2**62))


def commit(context: Context, dp: DpConfig, ledger: PrivacyLedger, release: Release) -> dict:
    """Record a round's release; return the metrics a DP client reports."""
    eps = ledger.record(**release)
    _store(context, ledger, int(_state(context, dp)["noise-seed"]))
    out = {EPSILON_KEY: eps, DELTA_KEY: dp.delta}
    for z, q, steps in release.get("gaussian", []):  # what it released, for auditing
        out |= {"dp-noise-multiplier": z, "dp-sample-rate": q, "dp-steps": steps}
    if release.get("laplace"):
        out["dp-round-epsilon"] = sum(release["laplace"])
    return out


def check_budget(ledger: PrivacyLedger, release: Release, dp: DpConfig) -> None:
    after = ledger.epsilon(**release)
    if after > dp.epsilon * (1 + 1e-6):
        raise BudgetExhausted(
            f"privacy budget exhausted: epsilon would reach {after:.4g} > dp.epsilon = "
            f"{dp.epsilon:g} (delta {dp.delta:g}) after this round; spent {ledger.epsilon():.4g} "
            f"in {ledger.rounds} rounds. Declining to train"
        )


def declined(msg: Message, reason: str) -> Message:
    return Message(Error(code=BUDGET_EXHAUSTED, reason=f"dp: {reason}"), reply_to=msg)


@lru_cache(maxsize=64)
def _planned(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> float:
    return planned_noise(
        target_epsilon=epsilon, delta=delta, sample_rate=q, steps=steps, accountant=accountant
    )


def sgd_release(dp: DpConfig, n: int, settings: TrainSettings, rounds: int) -> Release:
    """This round's DP-SGD release; the noise covers ``rounds`` rounds unless set directly.

    Distributed DP takes one step a round; the noise multiplier is that of the
    sum of all shares (each client adds its share, ``z / sqrt(shares)``).
    """
    q, per_epoch = sampling(n, settings.batch_size)
    steps = 1 if dp.mode == "distributed" else settings.epochs * per_epoch
    budget = dp.epsilon - dp.input_epsilon
    z = dp.noise_multiplier or _planned(budget, dp.delta, q, rounds * steps, dp.accountant)
    return {"gaussian": [(z, q, steps)]}


def laplace_release(dp: DpConfig, ledger: PrivacyLedger, epochs: int, rounds: int) -> Release:
    """The next ``epochs`` entries of the increasing schedule over the planned epochs."""
    total = epsilon_schedule(dp.epsilon - ledger.input_epsilon, dp.laplace_increment,
                             rounds * epochs)  # fmt: skip
    start = ledger.rounds * epochs
    return {"laplace": total[start : start + epochs] or [dp.epsilon]}


def perturbed(data: ClientData, cfg: ConfigRecord, dp: DpConfig, seed: int) -> ClientData:
    """Training records with input perturbation (same noise every round: spent once)."""
    x, y = data.train.tensors  # type: ignore[attr-defined]
    bounds = FeatureBounds.around(
        np.asarray(cfg[STANDARDIZE_MEAN]), np.asarray(cfg[STANDARDIZE_STD]), width=dp.input_width
    )
    noisy = perturb_records(x.numpy(), bounds=bounds, epsilon=dp.input_epsilon, seed=seed)
    return ClientData(train=TensorDataset(torch.as_tensor(noisy), y), val=data.val)


def train_private(
    task: Task, model: nn.Module, data: ClientData, settings: TrainSettings,
    msg: Message, context: Context,
) -> dict[str, float]:  # fmt: skip
    """One round of local training under the run's client-side DP; raises BudgetExhausted.

    Only DP quantities are reported: a loss computed on raw records is not private.
    """
    cfg = msg.content[CONFIG]
    dp, rounds = DpConfig.from_run_config(cfg), int(cfg["dp.rounds"])
    ledger = ledger_of(context, dp)
    if dp.input_epsilon > 0:
        data = perturbed(data, cfg, dp, noise_seed(context, cfg, dp, salt=0))
    train: Dataset = data.train
    seed = noise_seed(context, cfg, dp, salt=int(cfg["server-round"]))
    release: Release = {}
    if dp.mode in ("dp-sgd", "distributed"):
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}  # w_t
        release = sgd_release(dp, len(train), settings, rounds)  # type: ignore[arg-type]
        check_budget(ledger, release, dp)
        shares = int(cfg["dp.shares"])
        z = release["gaussian"][0][0]
        sgd = DpSgd(noise_multiplier=z / math.sqrt(shares), max_grad_norm=dp.max_grad_norm,
                    grad_sample_mode=dp.grad_sample_mode)  # fmt: skip
        train_dp_sgd(model, train, task.loss_fn(train), sgd, epochs=settings.epochs,
                     batch_size=settings.batch_size, lr=settings.lr,
                     proximal_mu=settings.proximal_mu, seed=seed,
                     max_steps=1 if dp.mode == "distributed" else None)  # fmt: skip
        metrics: dict[str, float] = {}
        if dp.mode == "distributed" and dp.momentum > 0:
            metrics["dp-momentum-applied"] = float(
                heavy_ball(model, start, context, int(cfg["server-round"]), dp.momentum)
            )
        if shares > 1:  # what this client's own share guarantees if its update is ever decrypted
            history = [*ledger.gaussian, *release["gaussian"]]
            alone = [(zi / math.sqrt(shares), q, n) for zi, q, n in history]
            metrics[ALONE_KEY] = gaussian_epsilon(alone, delta=dp.delta, accountant=dp.accountant)
    elif dp.mode == "laplace-sgd":
        release = laplace_release(dp, ledger, settings.epochs, rounds)
        check_budget(ledger, release, dp)
        report = train_laplace_sgd(
            model, train, task.loss_fn(train), epochs=settings.epochs,
            batch_size=settings.batch_size, epoch_epsilons=release["laplace"],
            l1_clip=dp.l1_clip, loss_bound=dp.loss_bound, weight_decay=dp.weight_decay,
            relaxation=dp.relaxation, max_lr=settings.lr, proximal_mu=settings.proximal_mu,
            seed=seed,
        )  # fmt: skip
        metrics = {"train-loss": report.mean_loss, "dp-mean-lr": report.mean_lr}
    elif dp.mode == "local":  # dp_mod checks the budget, noises the update, keeps the ledger
        task.train(model, train, settings)
        return {}
    else:  # input perturbation alone: its epsilon was spent once, training is post-processing
        check_budget(ledger, release, dp)
        metrics = task.train(model, train, settings)
    return metrics | commit(context, dp, ledger, release)


@torch.no_grad()
def heavy_ball(
    model: nn.Module, start: dict[str, torch.Tensor], context: Context, server_round: int,
    beta: float,
) -> bool:  # fmt: skip
    """Add ``beta * (w_t - w_{t-1})`` to this client's one-step model (distributed DP).

    Averaged over clients this is heavy-ball momentum on the aggregate noisy
    gradient, which the blind server cannot apply to ciphertexts. It uses
    only the global models the client received (post-processing: no privacy
    cost). Applied only when this client also saw round t-1's model.
    """
    previous = context.state.get(MOMENTUM_KEY)
    applied = previous is not None and int(context.state[MOMENTUM_ROUND_KEY]["round"]) == (
        server_round - 1
    )
    if applied:
        state = model.state_dict()
        for k, v in previous.to_torch_state_dict().items():
            state[k] += beta * (start[k] - v)
        model.load_state_dict(state)
    context.state[MOMENTUM_KEY] = ArrayRecord(start)
    context.state[MOMENTUM_ROUND_KEY] = ConfigRecord({"round": server_round})
    return applied


def dp_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Local DP (``dp.mode = local``): clip the outgoing update and add noise to it.

    Gaussian noise is Flower's ``LocalDpMod``; Laplace is ``flwr_privacy.dp.mechanisms``.
    Sits inside the HE mod, so the noisy update is what gets encrypted.
    """
    cfg = msg.content.config_records.get(CONFIG) if msg.has_content() else None
    if msg.metadata.message_type != MessageType.TRAIN or cfg is None:
        return call_next(msg, context)
    if cfg.get("dp.mode") != "local":
        return call_next(msg, context)
    dp, rounds = DpConfig.from_run_config(cfg), int(cfg["dp.rounds"])
    ledger = ledger_of(context, dp)
    budget = dp.epsilon - ledger.input_epsilon
    if dp.local_mechanism == "gaussian":
        z = dp.noise_multiplier or _planned(budget, dp.delta, 1.0, rounds, dp.accountant)
        release: Release = {"gaussian": [(z, 1.0, 1)]}
    else:
        release = {"laplace": [budget / rounds]}
    try:
        check_budget(ledger, release, dp)
    except BudgetExhausted as e:
        return declined(msg, str(e))
    if dp.local_mechanism == "gaussian":
        clip = dp.max_grad_norm
        inner = LocalDpMod(clipping_norm=clip, sensitivity=2 * clip,
                           epsilon=flower_epsilon(z, dp.delta), delta=dp.delta)  # fmt: skip
        reply = inner(msg, context, call_next)
    else:
        reply = _laplace_noised(msg, context, call_next, dp, release["laplace"][0])
    if reply.has_error():
        return reply
    for key, value in commit(context, dp, ledger, release).items():
        reply.content[METRICS][key] = value
    return reply


def _laplace_noised(
    msg: Message, context: Context, call_next: ClientAppCallable, dp: DpConfig, epsilon: float
) -> Message:
    sent = {k: a.numpy().copy() for k, a in msg.content[ARRAYS].items()}
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    cfg = msg.content[CONFIG]
    rng = np.random.default_rng(noise_seed(context, cfg, dp, salt=int(cfg["server-round"])))
    update = {k: a.numpy() for k, a in reply.content[ARRAYS].items()}
    noisy = laplace_update(update, sent, l1_clip=dp.l1_clip, epsilon=epsilon, rng=rng)
    arrays = {k: Array(np.ascontiguousarray(v)) for k, v in noisy.items()}
    reply.content[ARRAYS] = ArrayRecord(arrays)
    return reply
