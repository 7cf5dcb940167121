"""Breast-cancer diagnosis: logistic regression (30 features -> 1 logit) on WDBC.

``loss = "taylor"`` trains on the medical-data paper's second-order Taylor
approximation of the logistic loss, log(1 + e^-sz) ~ log 2 - sz/2 + z^2/8
(s = +-1): quadratic in the weights, so local SGD is an affine map of them,
which is what training on an encrypted model needs (server-keyed HE).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from data.partition import holdout_split
from data.wdbc import load_wdbc
from tasks.base import option
from tasks.metrics import accuracy, precision_recall_f1, roc_auc
from tasks.tabular import Standardize, TabularTask
from tasks.training import LossFn, predict

NUM_FEATURES = 30
LOSSES = ("exact", "taylor")


class LogisticRegression(nn.Module):
    def __init__(self, num_features: int = NUM_FEATURES) -> None:
        super().__init__()
        self.standardize = Standardize(num_features)
        self.linear = nn.Linear(num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.standardize(x)).squeeze(-1)


def _bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, y.float())


def _taylor(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Second-order Taylor expansion of the logistic loss at z = 0 (labels 0/1 -> s = -1/+1)."""
    s = 2.0 * y.float() - 1.0
    return (math.log(2.0) - 0.5 * s * logits + logits**2 / 8.0).mean()


def binary_metrics(logits: np.ndarray, labels: np.ndarray, loss: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 at threshold 0.5; ROC-AUC when both classes occur."""
    pred = (logits >= 0.0).astype(np.int64)
    precision, recall, f1 = (float(v[1]) for v in precision_recall_f1(labels, pred, 2))
    out = {
        "loss": float(loss),
        "accuracy": accuracy(labels, pred),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
    if len(np.unique(labels)) == 2:
        out["roc-auc"] = roc_auc(labels, logits)
    return out


class BreastCancer(TabularTask):
    """WDBC with a fixed stratified held-out test split (independent of the run seed)."""

    name = "breast-cancer"
    metric_names = ("loss", "accuracy", "precision", "recall", "f1")
    num_classes = 2

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("benign", "malignant")  # label 1 is malignant

    def __init__(
        self, *, loss: str = "exact", test_fraction: float = 0.2, split_seed: int = 42
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"breast-cancer loss {loss!r}; allowed: {' | '.join(LOSSES)}")
        self.loss = loss
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> BreastCancer:
        return cls(loss=option(cfg, "breast-cancer.loss", "exact", LOSSES))

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x, y = load_wdbc()
        train, test = holdout_split(y, test_fraction=self.test_fraction, seed=self.split_seed)
        return x[train], y[train], x[test], y[test]

    def build_model(self) -> nn.Module:
        return LogisticRegression()

    def loss_fn(self, data: Dataset) -> LossFn:
        return _taylor if self.loss == "taylor" else _bce

    def evaluate(self, model: nn.Module, data: Dataset) -> dict[str, float]:
        logits, labels, loss = predict(model, data, _bce)
        return binary_metrics(logits, labels, loss)
