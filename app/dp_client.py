"""This app's client-side DP training: the modes that need its ``Task`` (DP-SGD on the
task's loss, distributed DP, Laplace DP-SGD, input perturbation of tabular records).

The settings are the ``flwr-privacy.dp`` record the server's ``BudgetGuard`` writes;
the ledger, budget checks and secret noise seeds are the toolkit's
(``flwr_privacy.dp.client``); local DP on the update is ``flwr_privacy.mods.local_dp_mod``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from app.records import CONFIG, STANDARDIZE_MEAN, STANDARDIZE_STD
from flwr_privacy.dp import DpSettings, PrivacyLedger
from flwr_privacy.dp.client import (
    Release,
    check_budget,
    commit,
    gaussian_release,
    ledger_of,
    noise_seed,
)
from flwr_privacy.dp.distributed import client_budget, ddg_release, round_plan
from flwr_privacy.dp.input import FeatureBounds, perturb_records
from flwr_privacy.dp.laplace import epsilon_schedule, train_laplace_sgd
from flwr_privacy.dp.ledger import gaussian_epsilon
from flwr_privacy.dp.sgd import DpSgd, sampling, train_dp_sgd
from flwr_privacy.records import as_int
from flwr_privacy.sizes import dataset_size
from tasks import ClientData, Task, TrainSettings

MOMENTUM_KEY, MOMENTUM_ROUND_KEY = "dp-previous-model", "dp-previous-round"
ALONE_KEY = "dp-epsilon-alone"  # distributed DP: epsilon of one client's share on its own


def sgd_release(dp: DpSettings, n: int, settings: TrainSettings) -> Release:
    """This round's DP-SGD release; the noise covers ``dp.rounds`` rounds unless set directly.

    Distributed DP takes one step a round; the noise multiplier is that of the
    sum of all shares (each client adds its share, ``z / sqrt(shares)``).
    """
    q, per_epoch = sampling(n, settings.batch_size)
    steps = 1 if dp.mode == "distributed" else settings.epochs * per_epoch
    return gaussian_release(dp, sample_rate=q, steps=steps)


def laplace_release(dp: DpSettings, ledger: PrivacyLedger, epochs: int) -> Release:
    """The next ``epochs`` entries of the increasing schedule over the planned epochs."""
    total = epsilon_schedule(dp.epsilon - ledger.input_epsilon, dp.laplace_increment,
                             dp.rounds * epochs)  # fmt: skip
    start = ledger.rounds * epochs
    return {"laplace": total[start : start + epochs] or [dp.epsilon]}


def perturbed(data: ClientData, cfg: ConfigRecord, dp: DpSettings, seed: int) -> ClientData:
    """Training records with input perturbation (same noise every round: spent once)."""
    if not isinstance(data.train, TensorDataset):
        raise TypeError(
            f"input perturbation needs a TensorDataset, not {type(data.train).__name__}"
        )
    x, y = data.train.tensors
    bounds = FeatureBounds.around(
        np.asarray(cfg[STANDARDIZE_MEAN]), np.asarray(cfg[STANDARDIZE_STD]), width=dp.input_width
    )
    noisy = perturb_records(x.numpy(), bounds=bounds, epsilon=dp.input_epsilon, seed=seed)
    return ClientData(train=TensorDataset(torch.as_tensor(noisy), y), val=data.val)


def train_private(
    task: Task, model: nn.Module, data: ClientData, settings: TrainSettings,
    msg: Message, context: Context, dp: DpSettings,
) -> dict[str, float]:  # fmt: skip
    """One round of local training under the run's client-side DP; raises BudgetExhausted.

    Only DP quantities are reported: a loss computed on raw records is not private.
    """
    cfg = msg.content.config_records[CONFIG]
    plan = round_plan(msg) if dp.mode == "distributed" else None
    budget = None
    if plan is not None:  # the client's own budget, never the server's (distributed-dp guide)
        dp, budget = client_budget(context, dp, fallback_source="run config (simulated trust)")
    ledger = ledger_of(context, dp)
    if dp.input_epsilon > 0:
        data = perturbed(data, cfg, dp, noise_seed(context, dp, salt=0))
    train: Dataset = data.train
    seed = noise_seed(context, dp, salt=as_int(cfg["server-round"]))
    release: Release = {}
    if dp.mode in ("dp-sgd", "distributed"):
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}  # w_t
        if plan is not None and budget is not None:  # SecAgg+: secagg_mod adds the noise
            q, _ = sampling(dataset_size(train), settings.batch_size)
            # what one example moves this client's one clipped step by, as it trains it
            release = ddg_release(plan, budget, dp, ledger, sample_rate=q,
                                  l2_clip=settings.lr * dp.max_grad_norm / settings.batch_size)
            z = 0.0
        else:
            release = sgd_release(dp, dataset_size(train), settings)
            z = release["gaussian"][0][0] / math.sqrt(dp.shares)
            check_budget(ledger, release, dp)
        sgd = DpSgd(noise_multiplier=z, max_grad_norm=dp.max_grad_norm,
                    grad_sample_mode=dp.grad_sample_mode)  # fmt: skip
        train_dp_sgd(model, train, task.loss_fn(train), sgd, epochs=settings.epochs,
                     batch_size=settings.batch_size, lr=settings.lr,
                     proximal_mu=settings.proximal_mu, seed=seed,
                     max_steps=1 if dp.mode == "distributed" else None)  # fmt: skip
        metrics: dict[str, float] = {}
        if dp.mode == "distributed" and dp.momentum > 0:
            metrics["dp-momentum-applied"] = float(
                heavy_ball(model, start, context, as_int(cfg["server-round"]), dp.momentum)
            )
        if dp.shares > 1 and plan is None:  # what this client's own share guarantees alone
            history = [*ledger.gaussian, *release["gaussian"]]
            alone = [(zi / math.sqrt(dp.shares), q, n) for zi, q, n in history]
            metrics[ALONE_KEY] = gaussian_epsilon(alone, delta=dp.delta, accountant=dp.accountant)
    elif dp.mode == "laplace-sgd":
        release = laplace_release(dp, ledger, settings.epochs)
        check_budget(ledger, release, dp)
        report = train_laplace_sgd(
            model, train, task.loss_fn(train), epochs=settings.epochs,
            batch_size=settings.batch_size, epoch_epsilons=release["laplace"],
            l1_clip=dp.l1_clip, loss_bound=dp.loss_bound, weight_decay=dp.weight_decay,
            relaxation=dp.relaxation, max_lr=settings.lr, proximal_mu=settings.proximal_mu,
            seed=seed,
        )  # fmt: skip
        metrics = {"train-loss": report.mean_loss, "dp-mean-lr": report.mean_lr}
    elif dp.mode == "local":  # local_dp_mod checks the budget, noises the update, keeps the ledger
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
    previous = context.state.array_records.get(MOMENTUM_KEY)
    applied = previous is not None and as_int(
        context.state.config_records[MOMENTUM_ROUND_KEY]["round"]
    ) == (server_round - 1)
    if previous is not None and applied:
        state = model.state_dict()
        for k, v in previous.to_torch_state_dict().items():
            state[k] += beta * (start[k] - v)
        model.load_state_dict(state)
    context.state[MOMENTUM_KEY] = ArrayRecord(start)
    context.state[MOMENTUM_ROUND_KEY] = ConfigRecord({"round": server_round})
    return applied
