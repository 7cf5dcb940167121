"""The numpy metrics equal scikit-learn's on random and degenerate cases."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from tasks.metrics import accuracy, confusion, precision_recall_f1, roc_auc


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 5])
def test_classification_metrics_equal_scikit_learn(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, 200)
    pred = np.where(rng.random(200) < 0.6, labels, rng.integers(0, k, 200))
    pred[pred == k - 1] = 0  # one class never predicted: zero division
    ids = list(range(k))
    p, r, f, _ = precision_recall_fscore_support(labels, pred, labels=ids, zero_division=0)
    got = precision_recall_f1(labels, pred, k)
    for mine, theirs in zip(got, (p, r, f), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-15)
    assert accuracy(labels, pred) == accuracy_score(labels, pred)
    assert np.array_equal(confusion(labels, pred, k), confusion_matrix(labels, pred, labels=ids))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 150)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(4, dtype=int), np.arange(4.0))
