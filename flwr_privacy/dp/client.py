"""Client-side DP bookkeeping: the ledger in ``context.state``, secret noise seeds, budgets.

Per round a client plans its release, checks that its ledger plus that release
stays within its epsilon (otherwise it declines with a ``BUDGET_EXHAUSTED`` error
reply, see ``declined``), trains or noises, then records what it released
(``commit``). The ledger lives in Flower's ``context.state``, which survives across
rounds in a SuperNode process and in the simulation engine alike.

Noise seeds are a per-client secret drawn with ``secrets`` and kept in
``context.state`` (anyone who knows the seed can subtract the noise). A public
``DpSettings.noise_seed`` makes experiments repeatable and voids the guarantee
against whoever knows it: an explicit opt-out, never a default.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message

from flwr_privacy.dp.ledger import PrivacyLedger
from flwr_privacy.dp.settings import DpSettings
from flwr_privacy.records import DP_RECORD, as_int, settings_record

__all__ = [
    "BUDGET_EXHAUSTED",
    "BudgetExhausted",
    "DELTA_KEY",
    "EPSILON_KEY",
    "Release",
    "SEED_KEY",
    "STATE_KEY",
    "check_budget",
    "commit",
    "declined",
    "dp_settings",
    "gaussian_release",
    "ledger_of",
    "noise_seed",
]

# Error code of a client's reply declining to train: its next round would exceed its budget.
# (Flower's own codes are 0-8.)
BUDGET_EXHAUSTED = 4031
EPSILON_KEY = "dp-epsilon"  # train-reply metric: the client's epsilon after this round
DELTA_KEY = "dp-delta"
STATE_KEY = "flwr-privacy.dp-ledger"  # context.state record: ledger and secret noise seed
SEED_KEY = "noise-seed"
Release = dict[str, list[Any]]  # {"gaussian": [(z, q, steps)], "laplace": [eps, ...]}


class BudgetExhausted(RuntimeError):
    """This client's next round would take its epsilon past its budget."""


def dp_settings(msg: Message) -> DpSettings | None:
    """The DP settings the server-side layer sent on ``msg``, or None if it sent none.

    Raises ValueError when the record is there but incomplete or invalid.
    """
    record = settings_record(msg, DP_RECORD)
    return None if record is None else DpSettings.from_record(record)


def _state(context: Context, dp: DpSettings) -> ConfigRecord:
    if STATE_KEY not in context.state:
        ledger = PrivacyLedger(
            delta=dp.delta, accountant=dp.accountant, input_epsilon=dp.input_epsilon
        )
        _store(context, ledger, secrets.randbits(62))
    return context.state.config_records[STATE_KEY]


def _store(context: Context, ledger: PrivacyLedger, seed: int) -> None:
    record = ConfigRecord(ledger.state_dict())
    record[SEED_KEY] = seed
    context.state[STATE_KEY] = record


def ledger_of(context: Context, dp: DpSettings) -> PrivacyLedger:
    """This client's ledger, as kept across rounds in its context state."""
    return PrivacyLedger.from_state_dict(_state(context, dp))


def noise_seed(context: Context, dp: DpSettings, salt: int) -> int:
    """Secret per client (public and repeatable if ``dp.noise_seed`` is set), distinct per salt."""
    secret = as_int(_state(context, dp)[SEED_KEY])
    base = secret if dp.noise_seed is None else dp.noise_seed
    node = int(context.node_config.get("partition-id", context.node_id))
    return int(np.random.default_rng([base, node, salt]).integers(2**62))


def commit(
    context: Context, dp: DpSettings, ledger: PrivacyLedger, release: Release
) -> dict[str, float]:
    """Record a round's release; return the metrics a DP client reports."""
    eps = ledger.record(**release)
    _store(context, ledger, as_int(_state(context, dp)[SEED_KEY]))
    out: dict[str, float] = {EPSILON_KEY: eps, DELTA_KEY: dp.delta}
    for z, q, steps in release.get("gaussian", []):  # what it released, for auditing
        out |= {"dp-noise-multiplier": z, "dp-sample-rate": q, "dp-steps": steps}
    if release.get("laplace"):
        out["dp-round-epsilon"] = sum(release["laplace"])
    return out


def check_budget(ledger: PrivacyLedger, release: Release, dp: DpSettings) -> None:
    """Raise BudgetExhausted if ``release`` would take the ledger past ``dp.epsilon``."""
    after = ledger.epsilon(**release)
    if after > dp.epsilon * (1 + 1e-6):
        raise BudgetExhausted(
            f"privacy budget exhausted: epsilon would reach {after:.4g} > the budget epsilon = "
            f"{dp.epsilon:g} (delta {dp.delta:g}) after this round; spent {ledger.epsilon():.4g} "
            f"in {ledger.rounds} rounds. Declining to train"
        )


def declined(msg: Message, reason: str | BaseException) -> Message:
    """The reply of a client that declines to train (``BudgetGuard`` stops asking it).

    Parameters
    ----------
    msg : Message
        The train message being answered.
    reason : str or BaseException
        Why (usually the ``BudgetExhausted`` raised by ``dp_sgd_fit``); sent as the
        error reply's reason, with code 4031.
    """
    return Message(Error(code=BUDGET_EXHAUSTED, reason=f"dp: {reason}"), reply_to=msg)


@lru_cache(maxsize=64)
def _planned(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> float:
    from flwr_privacy.dp.sgd import planned_noise  # torch and Opacus: only when planning

    return planned_noise(
        target_epsilon=epsilon, delta=delta, sample_rate=q, steps=steps, accountant=accountant
    )


def gaussian_release(dp: DpSettings, *, sample_rate: float, steps: int) -> Release:
    """One round of ``steps`` Gaussian steps; the noise spreads the budget over ``dp.rounds``.

    A fixed ``dp.noise_multiplier`` is used as given; otherwise the smallest one whose
    epsilon over ``dp.rounds * steps`` steps stays within ``epsilon - input_epsilon``.
    """
    budget = dp.epsilon - dp.input_epsilon
    z = dp.noise_multiplier or _planned(
        budget, dp.delta, sample_rate, dp.rounds * steps, dp.accountant
    )
    return {"gaussian": [(z, sample_rate, steps)]}
