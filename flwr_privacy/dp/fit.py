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

from flwr.app import Context

from flwr_privacy.extras import requires

with requires("dp", "DP-SGD (flwr_privacy.dp.fit)"):
    from torch import nn, optim
    from torch.utils.data import DataLoader

from flwr_privacy.dp.client import (
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
