"""Differential-privacy core shared by the client mods and the server: ledger, mechanisms."""

from flwr_privacy.dp.ledger import ACCOUNTANTS, PrivacyLedger, gaussian_epsilon
from flwr_privacy.dp.sgd import DpSgd, planned_noise, sampling, train_dp_sgd

# Error code of a client's reply declining to train: its next round would exceed its budget.
# (Flower's own codes are 0-8.)
BUDGET_EXHAUSTED = 4031
EPSILON_KEY = "dp-epsilon"  # train-reply metric: the client's epsilon after this round
DELTA_KEY = "dp-delta"

__all__ = [
    "ACCOUNTANTS",
    "BUDGET_EXHAUSTED",
    "DELTA_KEY",
    "EPSILON_KEY",
    "DpSgd",
    "PrivacyLedger",
    "gaussian_epsilon",
    "planned_noise",
    "sampling",
    "train_dp_sgd",
]
