"""Differential-privacy core shared by the client mods and the server: settings, ledger, DP-SGD.

Importing this package loads neither torch nor Opacus: the DP-SGD names (``dp_sgd_fit``,
``distributed_dp_fit``, ``train_dp_sgd``, ``DpSgd``, ``planned_noise``, ``sampling``) load on
first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from flwr_privacy.dp.client import (
    BUDGET_EXHAUSTED,
    DELTA_KEY,
    EPSILON_KEY,
    BudgetExhausted,
    check_budget,
    commit,
    declined,
    dp_settings,
    ledger_of,
)
from flwr_privacy.dp.ledger import ACCOUNTANTS, PrivacyLedger, gaussian_epsilon
from flwr_privacy.dp.settings import DpSettings

if TYPE_CHECKING:
    from flwr_privacy.dp.fit import distributed_dp_fit, dp_sgd_fit
    from flwr_privacy.dp.sgd import DpSgd, planned_noise, sampling, train_dp_sgd

_LAZY = {
    "dp_sgd_fit": "flwr_privacy.dp.fit",
    "distributed_dp_fit": "flwr_privacy.dp.fit",
    "DpSgd": "flwr_privacy.dp.sgd",
    "planned_noise": "flwr_privacy.dp.sgd",
    "sampling": "flwr_privacy.dp.sgd",
    "train_dp_sgd": "flwr_privacy.dp.sgd",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flwr_privacy.dp' has no attribute {name!r}")


__all__ = [
    "ACCOUNTANTS",
    "BUDGET_EXHAUSTED",
    "DELTA_KEY",
    "EPSILON_KEY",
    "BudgetExhausted",
    "DpSettings",
    "DpSgd",
    "PrivacyLedger",
    "check_budget",
    "commit",
    "declined",
    "distributed_dp_fit",
    "dp_settings",
    "dp_sgd_fit",
    "gaussian_epsilon",
    "ledger_of",
    "planned_noise",
    "sampling",
    "train_dp_sgd",
]
