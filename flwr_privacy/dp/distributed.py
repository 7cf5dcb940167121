"""A client's side of distributed DP under SecAgg+: its own budget, the round's plan, its release.

Under ``SecAggPlus(inner, secagg=SecAggSettings(dp=DistributedDp(...)))`` the server plans a
grid and a discrete Gaussian scale; ``secagg_mod`` verifies the plan against the round's
signed parameters and passes it on in the ``flwr-privacy.secagg`` record. Before training,
the client checks that plan against *its own* budget (node config ``dp-epsilon``,
``dp-delta``, ``dp-rounds``; in a simulation the fallback the app passes) with *its own*
clip and sample rate, and refuses a plan that adds too little noise. The client then takes
one clipped DP-SGD step without noise of its own; ``secagg_mod`` adds its discrete Gaussian
share when it encodes the update.

Importing this module loads neither torch nor Opacus.
"""

from __future__ import annotations

from dataclasses import replace

from flwr.app import Context, Message

from flwr_privacy.dp.client import BudgetExhausted, Release, check_budget
from flwr_privacy.dp.ddg import DdgBudget, DdgPlan, check_plan_noise, client_step
from flwr_privacy.dp.ledger import PrivacyLedger
from flwr_privacy.dp.settings import DpSettings
from flwr_privacy.records import SECAGG_RECORD

__all__ = ["client_budget", "ddg_release", "round_plan"]


def round_plan(msg: Message) -> DdgPlan | None:
    """This round's distributed discrete Gaussian plan, or None outside SecAgg+.

    ``secagg_mod`` writes it from the round's signed parameters, with the honest count the
    client verified. A SecAgg+ round whose signed parameters add no noise is refused.
    """
    record = msg.content.config_records.get(SECAGG_RECORD)
    if record is None:
        return None
    if record.get("encoding") != "ddg":  # a signed fixed-point round: nobody adds noise
        raise BudgetExhausted("distributed DP asked for, but this SecAgg+ round's signed "
                              "parameters encode fixed-point updates without noise: refused")
    return DdgPlan.from_record(record)


def client_budget(
    context: Context, dp: DpSettings, *, fallback_source: str
) -> tuple[DpSettings, DdgBudget]:
    """The budget this node accepts (node config ``dp-epsilon``/``-delta``/``-rounds``), and
    ``dp`` with it.

    Without those keys the budget in ``dp`` is used and ``fallback_source`` names where it
    came from (in a simulation it passes through the server: simulated trust).
    """
    fallback = DdgBudget(dp.epsilon, dp.delta, dp.rounds, fallback_source)
    budget = DdgBudget.from_node_config(context.node_config, fallback=fallback)
    own = replace(dp, epsilon=budget.epsilon, delta=budget.delta, rounds=budget.rounds)
    return own, budget


def ddg_release(
    plan: DdgPlan, budget: DdgBudget, dp: DpSettings, ledger: PrivacyLedger, *,
    l2_clip: float, sample_rate: float,
) -> Release:  # fmt: skip
    """This round's release as the client accounts it; raises BudgetExhausted before training.

    Parameters
    ----------
    plan : the verified plan (``round_plan``).
    budget, dp : the client's own budget and its settings with it (``client_budget``).
    ledger : the client's ledger so far.
    l2_clip : what one example moves this client's one clipped step by (``lr * C / B``).
    sample_rate : this client's Poisson sample rate (``1 / len(loader)``).
    """
    step = client_step(plan, sample_rate=sample_rate, l2_clip=l2_clip)
    try:
        check_plan_noise(step, budget)
    except ValueError as e:
        raise BudgetExhausted(str(e)) from None
    release: Release = {"ddg": [step]}
    check_budget(ledger, release, dp)
    return release
