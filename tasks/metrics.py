"""Classification metrics in numpy, equal to scikit-learn's (tests compare them).

scikit-learn's import costs more than a whole client message's training on the
small tasks, and every ClientApp message in a deployment is a fresh process.
Divisions by zero give 0 (scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

import numpy as np


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of ``pred`` equal to ``labels`` (``accuracy_score``)."""
    return float(np.mean(np.asarray(labels) == np.asarray(pred)))


def confusion(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` over classes ``0 .. num_classes-1`` (``confusion_matrix``).

    Samples whose label or prediction is outside that range are not counted.
    """
    labels, pred = np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    keep = (labels >= 0) & (labels < num_classes) & (pred >= 0) & (pred < num_classes)
    flat = labels[keep] * num_classes + pred[keep]
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def precision_recall_f1(
    labels: np.ndarray, pred: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 (``precision_recall_fscore_support``)."""
    cm = confusion(labels, pred, num_classes)
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    return _ratio(tp, predicted), _ratio(tp, actual), _ratio(2 * tp, predicted + actual)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of binary ``labels`` (1 positive) ranked by ``scores``.

    The Mann-Whitney statistic with average ranks for ties (``roc_auc_score``).
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both classes among the labels")
    order = np.argsort(scores, kind="mergesort")
    ends = np.r_[np.flatnonzero(np.diff(scores[order])) + 1, len(scores)]
    starts = np.r_[0, ends[:-1]]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
