"""Model, data and the training step: plain scikit-learn, no Flower, no privacy code.

The data is scikit-learn's bundled breast-cancer set (569 records, 30 features; no
download), standardized, shuffled once from a fixed seed and cut into equal IID parts:
every node, round and run sees the same records.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.preprocessing import StandardScaler

DATA_SEED = 2024
CLASSES = np.array([0, 1])


def load_data(partition_id: int, num_partitions: int) -> tuple[np.ndarray, ...]:
    """This node's share: ``x_train, y_train, x_test, y_test`` (80 / 20)."""
    x, y = load_breast_cancer(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    order = np.random.default_rng(DATA_SEED).permutation(len(y))
    order = order[: len(order) - len(order) % num_partitions]  # equal parts: equal FedAvg weights
    part = np.split(order, num_partitions)[partition_id]
    cut = int(0.8 * len(part))
    return x[part[:cut]], y[part[:cut]], x[part[cut:]], y[part[cut:]]


def new_model(local_epochs: int) -> LogisticRegression:
    """Logistic regression that continues from the weights it is given (``warm_start``)."""
    model = LogisticRegression(max_iter=local_epochs, warm_start=True)
    model.classes_ = CLASSES
    return model


def get_params(model: LogisticRegression) -> dict[str, np.ndarray]:
    return {"coef": model.coef_, "intercept": model.intercept_}


def set_params(model: LogisticRegression, params: dict[str, np.ndarray]) -> None:
    model.coef_, model.intercept_ = params["coef"], params["intercept"]


def initial_params(num_features: int = 30) -> dict[str, np.ndarray]:
    return {"coef": np.zeros((1, num_features)), "intercept": np.zeros(1)}


def fit(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
    """A few solver iterations from the current weights; the training log-loss after."""
    with warnings.catch_warnings():  # max_iter is the local-epoch budget, not convergence
        warnings.simplefilter("ignore")
        model.fit(x, y)
    return float(log_loss(y, model.predict_proba(x), labels=CLASSES))


def test(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Log-loss and accuracy on ``x, y``."""
    loss = float(log_loss(y, model.predict_proba(x), labels=CLASSES))
    return loss, float(accuracy_score(y, model.predict(x)))
