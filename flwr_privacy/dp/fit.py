"""Sample-level DP-SGD for any Flower app: the user's model, optimizer, loss and DataLoader.

Call it in place of the usual training loop inside ``@app.train()``::

    try:
        metrics = dp_sgd_fit(model, trainloader, context, epsilon=3.0, delta=1e-5,
                             rounds=num_rounds, optimizer=optimizer, loss_fn=loss_fn)
    except BudgetExhausted as e:
        return declined(msg, e)

The noise is planned over the whole schedule (``rounds`` rounds of ``epochs`` epochs),
the ledger is kept in ``context.state`` across rounds, and the noise and batch
sampling of every round are drawn from a secret per-client seed.
"""

from __future__ import annotations

from flwr.app import Context, Message

from flwr_privacy.extras import requires

with requires("dp", "DP-SGD (flwr_privacy.dp.fit)"):
    from torch import nn, optim
    from torch.utils.data import DataLoader

from flwr_privacy.dp.client import (
    BudgetExhausted,
    check_budget,
    commit,
    gaussian_release,
    ledger_of,
    noise_seed,
)
from flwr_privacy.dp.settings import DpSettings
from flwr_privacy.dp.sgd import DpSgd, LossFn, dp_sgd_steps


def dp_sgd_fit(
    model: nn.Module,
    train_loader: DataLoader,
    context: Context,
    *,
    epsilon: float,
    delta: float,
    rounds: int,
    optimizer: optim.Optimizer,
    loss_fn: LossFn,
    max_grad_norm: float = 1.0,
    epochs: int = 1,
    accountant: str = "rdp",
    noise_multiplier: float | None = None,
) -> dict[str, float]:
    """Train ``model`` in place for one round with Opacus DP-SGD; return the DP metrics.

    Parameters
    ----------
    model, train_loader, optimizer, loss_fn
        The app's own: any ``nn.Module``, a ``DataLoader`` made with ``batch_size=<int>``
        (Opacus Poisson-samples batches of that expected size), an optimizer over
        ``model.parameters()`` and a mean-reduced loss over ``(outputs, labels)``.
    context
        The ClientApp's context: its ``state`` keeps this client's ledger and secret seed.
    epsilon, delta
        This client's budget for the whole run.
    rounds
        Rounds the noise is planned over: the epsilon reaches ``epsilon`` after ``rounds``
        calls, and the next call raises ``BudgetExhausted`` before training.
    max_grad_norm
        Per-example L2 clip.
    epochs
        Local epochs this round (every call must use the same, as planned).
    accountant
        ``"rdp"`` or ``"prv"`` (Opacus).
    noise_multiplier
        A fixed noise multiplier instead of the planned one.

    Returns
    -------
    dict
        ``dp-epsilon`` (spent so far), ``dp-delta`` and this round's release
        (``dp-noise-multiplier``, ``dp-sample-rate``, ``dp-steps``). No training loss:
        a loss on the raw records is not private.

    Raises
    ------
    BudgetExhausted
        Before training, when this round would take the epsilon past ``epsilon``.
    """
    if noise_multiplier is not None and noise_multiplier <= 0:
        raise ValueError(
            f"noise_multiplier = {noise_multiplier!r} is invalid; allowed: > 0, or None to plan it"
        )
    if epochs < 1:
        raise ValueError(f"epochs = {epochs!r} is invalid; allowed: an integer >= 1")
    dp = DpSettings(mode="dp-sgd", epsilon=epsilon, delta=delta, rounds=rounds,
                    max_grad_norm=max_grad_norm, accountant=accountant,
                    noise_multiplier=noise_multiplier or 0.0)  # fmt: skip
    ledger = ledger_of(context, dp)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch < 1:
        raise ValueError("DP-SGD needs at least one training example; train_loader is empty")
    release = gaussian_release(
        dp, sample_rate=1.0 / steps_per_epoch, steps=epochs * steps_per_epoch
    )
    check_budget(ledger, release, dp)
    sgd = DpSgd(noise_multiplier=release["gaussian"][0][0], max_grad_norm=max_grad_norm)
    seed = noise_seed(context, dp, salt=ledger.rounds + 1)
    _, ran = dp_sgd_steps(model, train_loader, optimizer, loss_fn, sgd, epochs=epochs, seed=seed)
    return commit(context, dp, ledger, {"gaussian": [ran]})


def distributed_dp_fit(
    model: nn.Module,
    train_loader: DataLoader,
    msg: Message,
    context: Context,
    *,
    epsilon: float,
    delta: float,
    rounds: int,
    lr: float,
    loss_fn: LossFn,
    max_grad_norm: float = 1.0,
) -> dict[str, float]:
    """One clipped SGD step on this client's data, for distributed DP under SecAgg+.

    The server wraps its strategy in ``SecAggPlus(..., secagg=SecAggSettings(
    dp=DistributedDp.for_dp_sgd(...)))`` with the same ``lr``, batch size and
    ``max_grad_norm``; the ClientApp has ``secagg_mod`` (``make_secagg_mod``) among its
    mods, which adds this client's discrete Gaussian share to the update. This function
    checks the round's plan against this client's own budget and sensitivity, then takes
    exactly one Poisson-sampled step (expected batch ``train_loader.batch_size``, each
    example's gradient clipped to ``max_grad_norm``, plain SGD at ``lr``, no noise of its
    own: the sum of the honest clients' shares is the noise).

    Parameters
    ----------
    model, train_loader, loss_fn
        As in ``dp_sgd_fit`` (``train_loader`` made with ``batch_size=<int>``).
    msg, context
        The train message (its SecAgg+ plan, written by ``secagg_mod``) and the ClientApp's
        context (the ledger in ``context.state``).
    epsilon, delta, rounds
        This client's budget over the run, used unless node config sets ``dp-epsilon``,
        ``dp-delta``, ``dp-rounds`` (a deployment's own budget, which the server cannot change).
    lr, max_grad_norm
        The step: ``lr * max_grad_norm / batch_size`` is what one example moves it by.

    Returns
    -------
    dict
        ``dp-epsilon`` spent so far over the honest clients' noise and ``dp-delta``.

    Raises
    ------
    BudgetExhausted
        Before training, when the plan adds too little noise for this client's budget or the
        round would pass it (reply with ``declined(msg, e)``), or when the message holds no
        SecAgg+ plan (``secagg_mod`` missing, or a round without distributed DP).
    """
    from flwr_privacy.dp.distributed import client_budget, ddg_release, round_plan

    batch = train_loader.batch_size
    if not isinstance(batch, int) or batch < 1 or len(train_loader) < 1:
        raise ValueError("distributed_dp_fit needs a non-empty DataLoader made with "
                         f"batch_size=<int>, not batch_size={batch!r}")  # fmt: skip
    plan = round_plan(msg)
    if plan is None:
        raise BudgetExhausted(
            "distributed_dp_fit: this train message carries no distributed-DP plan: add "
            "make_secagg_mod(...) to the ClientApp's mods and wrap the server's strategy in "
            "SecAggPlus(..., secagg=SecAggSettings(dp=DistributedDp.for_dp_sgd(...)))"
        )
    from flwr_privacy.mods.secagg import SESSION_KEY

    if SESSION_KEY not in context.state:  # a record the server wrote, with no mod to add noise
        raise BudgetExhausted(
            "distributed_dp_fit: the round's plan did not come through secagg_mod (no SecAgg+ "
            "session in this node's state), so nothing would mask or noise the update: add "
            "make_secagg_mod(...) to the ClientApp's mods; refused"
        )
    dp = DpSettings(mode="distributed", epsilon=epsilon, delta=delta, rounds=rounds,
                    max_grad_norm=max_grad_norm)  # fmt: skip
    dp, budget = client_budget(context, dp, fallback_source="the ClientApp's arguments")
    ledger = ledger_of(context, dp)
    release = ddg_release(plan, budget, dp, ledger, sample_rate=1.0 / len(train_loader),
                          l2_clip=lr * max_grad_norm / batch)  # fmt: skip
    sgd = DpSgd(noise_multiplier=0.0, max_grad_norm=max_grad_norm)
    seed = noise_seed(context, dp, salt=ledger.rounds + 1)
    optimizer = optim.SGD(model.parameters(), lr=lr)
    dp_sgd_steps(model, train_loader, optimizer, loss_fn, sgd, epochs=1, seed=seed,
                 max_steps=1, expected_batch_size=batch)  # fmt: skip
    return commit(context, dp, ledger, release)
