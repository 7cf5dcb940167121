"""Membership inference toolkit: attacks separate what they should, metrics and DP check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from flwr_privacy.attacks.membership import (
    OperatingPoint,
    attack_metrics,
    check_dp_bound,
    clopper_pearson,
    dp_tpr_bound,
    lira_offline_scores,
    loss_threshold_scores,
    operating_point,
    tpr_at_fpr,
    true_class_phi,
)


def test_loss_threshold_auc_is_one_on_a_memorizing_model_and_half_on_one_distribution() -> None:
    # Prepare: a memorizing model (members' losses near 0) and a model that learned nothing
    rng = np.random.default_rng(0)
    member = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    memorized = np.where(member, rng.uniform(0, 0.01, 1000), rng.uniform(0.5, 3.0, 1000))
    same = rng.exponential(1.0, 1000)
    # Execute
    high = attack_metrics(loss_threshold_scores(memorized), member)
    chance = attack_metrics(loss_threshold_scores(same), member)
    # Assert
    assert high["auc"] == 1.0 and high["tpr@0.001"] == 1.0
    assert abs(chance["auc"] - 0.5) < 0.05 and chance["tpr@0.01"] < 0.05


def test_tpr_at_fpr_takes_the_largest_tpr_at_or_below_the_fpr() -> None:
    fpr = np.array([0.0, 0.0, 0.0005, 0.001, 0.004, 0.01, 0.02, 1.0])
    tpr = np.array([0.0, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.001) == 0.2
    assert tpr_at_fpr(fpr, tpr, 0.009) == 0.3  # never interpolated up towards 0.4
    assert tpr_at_fpr(fpr, tpr, 0.01) == 0.4
    assert tpr_at_fpr(fpr[2:], tpr[2:], 0.0001) == 0.0


def test_operating_point_counts_hits_at_the_threshold() -> None:
    # 10 members scored 1..10, 100 non-members scored below them except one at 9.5
    scores = np.r_[np.arange(1, 11), np.full(99, -1.0), [9.5]]
    member = np.r_[np.ones(10, bool), np.zeros(100, bool)]
    point = operating_point(scores, member, max_fpr=0.0)
    assert (point.true_positives, point.false_positives) == (1, 0)  # only the 10 beats 9.5
    point = operating_point(scores, member, max_fpr=0.01)
    assert (point.true_positives, point.false_positives) == (10, 1)


def test_true_class_phi_matches_log_odds_and_does_not_saturate() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 50.0, 0.0]])
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    phi = true_class_phi(logits, np.array([0, 1]))
    assert phi[0] == pytest.approx(math.log(p[0] / (1 - p[0])))
    assert phi[1] == pytest.approx(50.0 - math.log(2.0))  # p = 1 - 2e-22: finite
    assert true_class_phi(np.array([1.5, 1.5]), np.array([1, 0])).tolist() == [1.5, -1.5]


def _fit(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=10.0, max_iter=2000).fit(x, y)


def test_lira_separates_members_of_a_logistic_regression() -> None:
    # Prepare: 50 base points whose label is the sign of feature 0; 20 candidates, each
    # with a random label and a feature of its own (memorizable only by training on it).
    # The target trains on base + candidates 0-9; four shadows on fresh base draws (OUT).
    rng = np.random.default_rng(1)
    k, nc = 5, 20
    cand_x = np.zeros((nc, k + nc))
    cand_x[:, :k] = 0.3 * rng.normal(size=(nc, k))
    cand_x[np.arange(nc), k + np.arange(nc)] = 3.0
    cand_y = rng.integers(0, 2, nc)
    member = np.arange(nc) < 10

    def base() -> tuple[np.ndarray, np.ndarray]:
        x = np.zeros((50, k + nc))
        x[:, :k] = rng.normal(size=(50, k))
        return x, (x[:, 0] > 0).astype(int)

    bx, by = base()
    target = _fit(np.r_[bx, cand_x[member]], np.r_[by, cand_y[member]])
    shadows = [_fit(*base()) for _ in range(4)]
    # Execute
    target_phi = true_class_phi(target.decision_function(cand_x), cand_y)
    shadow_phi = np.stack([true_class_phi(s.decision_function(cand_x), cand_y) for s in shadows])
    scores = lira_offline_scores(target_phi, shadow_phi, global_variance=True)
    # Assert: members score above every non-member, where thresholding phi alone does not
    # (a candidate's OUT confidence depends on its base features: LiRA calibrates per example)
    assert attack_metrics(scores, member)["auc"] == 1.0
    assert attack_metrics(target_phi, member)["auc"] < 0.95
    assert attack_metrics(lira_offline_scores(target_phi, shadow_phi), member)["auc"] == 1.0


def test_lira_uses_only_out_shadows() -> None:
    # Shadow 0 trained on example 0 (IN, phi 10): masked out, the OUT ones (phi ~0) decide
    shadow_phi = np.array([[10.0, 0.1], [0.1, 0.2], [-0.1, -0.2], [0.0, 0.0]])
    out = np.ones_like(shadow_phi, dtype=bool)
    out[0, 0] = False
    scores = lira_offline_scores(np.array([5.0, 5.0]), shadow_phi, out, global_variance=True)
    unmasked = lira_offline_scores(np.array([5.0, 5.0]), shadow_phi, global_variance=True)
    assert scores[0] > unmasked[0]
    with pytest.raises(ValueError, match="no OUT"):
        lira_offline_scores(np.zeros(2), shadow_phi, np.zeros_like(out))


def test_dp_bound_flags_a_violation_and_accepts_a_compliant_attack() -> None:
    # eps 1, delta 1e-5, at FPR 1 %: TPR <= e * 0.01 + 1e-5 = 0.0272
    assert dp_tpr_bound(1.0, 1e-5, 0.01) == pytest.approx(math.e * 0.01 + 1e-5)
    # Violation: 300 of 1000 members caught with 10 of 1000 non-members
    bad = check_dp_bound(OperatingPoint(0.01, 300, 1000, 10, 1000), epsilon=1.0, delta=1e-5)
    assert bad.violated and not bad.point_within_bound
    # Compliant: 20 of 1000 (2 % < 2.72 %)
    good = check_dp_bound(OperatingPoint(0.01, 20, 1000, 10, 1000), epsilon=1.0, delta=1e-5)
    assert not good.violated and good.point_within_bound
    # Above the bound by the point estimate, but within sampling error: not a violation
    noisy = check_dp_bound(OperatingPoint(0.01, 2, 50, 10, 1000), epsilon=1.0, delta=1e-5)
    assert not noisy.point_within_bound and not noisy.violated
    assert good.as_dict()["violated"] is False


def test_clopper_pearson_matches_the_closed_forms() -> None:
    # zero successes: upper = 1 - alpha^(1/n); all successes: lower = alpha^(1/n)
    lo, hi = clopper_pearson(0, 100, 0.95)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.05 ** (1 / 100))
    lo, hi = clopper_pearson(100, 100, 0.95)
    assert hi == 1.0 and lo == pytest.approx(0.05 ** (1 / 100))
    lo, hi = clopper_pearson(30, 100)
    assert lo < 0.3 < hi
