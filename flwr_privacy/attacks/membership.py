"""Membership inference: who can tell whether one example was in a model's training set.

Two attacks on per-example outputs of a target model, the metrics the literature
reports for them, and the check that differential privacy implies:

- ``loss_threshold_scores``: Yeom et al. (2018), score = -loss (members fit better);
- ``lira_offline_scores``: the offline likelihood-ratio attack of Carlini et al.
  (2022, "Membership Inference Attacks From First Principles"): fit a Gaussian to the
  logit-scaled confidence ``phi = log(p / (1 - p))`` of the true class under shadow
  models that did *not* train on the example (OUT), and score how far above that
  distribution the target's ``phi`` lies (one-sided);
- ``attack_metrics``: ROC AUC and TPR at low FPR (scikit-learn's ``roc_curve``);
- ``check_dp_bound``: for an (epsilon, delta)-DP training algorithm every test of
  "x was in" against "x was out" has TPR <= e^epsilon FPR + delta (Kairouz et al. 2015;
  Humphries et al. 2023), checked with Clopper-Pearson intervals (``scipy.stats.beta``)
  because a TPR measured on a few hundred examples has sampling error.

LiRA is hand-written (about 20 lines over numpy/scipy): ``privacy-meter`` 1.0.1, the
one packaged implementation on the index, dates from 2023 and pins its own
torch/numpy stack; the attack itself is a per-example Gaussian fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flwr_privacy.extras import requires

with requires("attacks", "membership inference (flwr_privacy.attacks.membership)"):
    from scipy import stats
    from scipy.special import logsumexp
    from sklearn.metrics import roc_auc_score, roc_curve

LOW_FPRS = (0.01, 0.001)


def loss_threshold_scores(losses: np.ndarray) -> np.ndarray:
    """Yeom et al.'s attack: members have lower loss, so the score is -loss (higher = member)."""
    return -np.asarray(losses, dtype=np.float64)


def true_class_phi(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(p_y / (1 - p_y))`` of the true class from a model's raw outputs (logits).

    Computed in logit space, so it does not saturate at p = 1 as ``log(p) - log(1-p)``
    of float probabilities does: for softmax logits z it is
    ``z_y - logsumexp_{j != y} z_j``; a single logit per example (binary logistic
    regression, class 1 = positive) gives ``z`` for label 1 and ``-z`` for label 0.
    """
    z = np.asarray(outputs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if z.ndim == 1:
        return np.where(y == 1, z, -z)
    rows = np.arange(len(y))
    others = z.copy()
    others[rows, y] = -np.inf
    return z[rows, y] - logsumexp(others, axis=1)


def lira_offline_scores(
    target_phi: np.ndarray,
    shadow_phi: np.ndarray,
    shadow_out: np.ndarray | None = None,
    *,
    global_variance: bool = False,
    min_std: float = 1e-3,
) -> np.ndarray:
    """Offline LiRA score of each example: ``-log P[phi_OUT >= phi_target]`` under a Gaussian.

    Parameters
    ----------
    target_phi
        ``phi`` of each of the n examples under the target model, shape (n,).
    shadow_phi
        ``phi`` of the same examples under k shadow models, shape (k, n).
    shadow_out
        Boolean (k, n): shadow i did not train on example j. ``None``: every shadow is OUT
        for every example (shadows trained on a disjoint population).
    global_variance
        One standard deviation pooled over all OUT values (around each example's own
        mean) instead of one per example: Carlini et al.'s choice with few shadows, where
        a per-example variance from 2-8 values is too noisy.

    Notes
    -----
    The score is monotone in ``(phi - mu_out) / sigma_out`` (higher = member); the
    log p-value keeps resolution far in the tail where the p-value itself underflows.
    Examples without any OUT shadow get the pooled mean and deviation.
    """
    target = np.asarray(target_phi, dtype=np.float64)
    phi = np.asarray(shadow_phi, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[1] != target.shape[0]:
        raise ValueError(f"shadow_phi must be (shadows, {target.shape[0]}), got {phi.shape}")
    out = np.ones_like(phi, dtype=bool) if shadow_out is None else np.asarray(shadow_out, bool)
    if out.shape != phi.shape:
        raise ValueError(f"shadow_out must have shape {phi.shape}, got {out.shape}")
    if not out.any():
        raise ValueError("no OUT shadow value for any example: nothing to fit")
    count = out.sum(axis=0)
    masked = np.where(out, phi, 0.0)
    pooled_mean = phi[out].mean()
    mean = np.where(count > 0, masked.sum(axis=0) / np.maximum(count, 1), pooled_mean)
    resid = np.where(out, phi - mean, 0.0)
    dof = max(int(out.sum()) - int((count > 0).sum()), 1)
    pooled_std = math.sqrt(float((resid**2).sum()) / dof)
    if global_variance:
        std = np.full_like(target, pooled_std)
    else:
        per = np.sqrt((resid**2).sum(axis=0) / np.maximum(count - 1, 1))
        std = np.where(count > 1, per, pooled_std)
    z = (target - mean) / np.maximum(std, min_std)
    return -stats.norm.logsf(z)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """The largest TPR among ROC points with FPR <= ``max_fpr`` (no interpolation upward)."""
    ok = np.asarray(fpr) <= max_fpr
    return float(np.asarray(tpr)[ok].max()) if ok.any() else 0.0


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold of an attack: true/false positives among members/non-members."""

    max_fpr: float
    true_positives: int
    members: int
    false_positives: int
    non_members: int

    @property
    def tpr(self) -> float:
        return self.true_positives / self.members

    @property
    def fpr(self) -> float:
        return self.false_positives / self.non_members


def operating_point(scores: np.ndarray, is_member: np.ndarray, max_fpr: float) -> OperatingPoint:
    """The ROC threshold with the most true positives whose empirical FPR is <= ``max_fpr``."""
    member = np.asarray(is_member, dtype=bool)
    pos, neg = int(member.sum()), int((~member).sum())
    fpr, tpr, _ = roc_curve(member, scores)
    ok = np.flatnonzero(fpr <= max_fpr)
    best = ok[np.argmax(tpr[ok])]
    return OperatingPoint(max_fpr, int(round(tpr[best] * pos)), pos,
                          int(round(fpr[best] * neg)), neg)  # fmt: skip


def attack_metrics(
    scores: np.ndarray, is_member: np.ndarray, fprs: tuple[float, ...] = LOW_FPRS
) -> dict[str, float]:
    """AUC and ``tpr@<fpr>`` for each target FPR (e.g. ``tpr@0.001``)."""
    member = np.asarray(is_member, dtype=bool)
    fpr, tpr, _ = roc_curve(member, scores)
    out = {"auc": float(roc_auc_score(member, scores))}
    out.update({f"tpr@{f:g}": tpr_at_fpr(fpr, tpr, f) for f in fprs})
    return out


def dp_tpr_bound(epsilon: float, delta: float, fpr: float) -> float:
    """The largest TPR an (epsilon, delta)-DP algorithm allows at ``fpr``: e^eps FPR + delta."""
    return min(1.0, math.exp(epsilon) * fpr + delta)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds at ``confidence`` each (lower, upper) of a rate."""
    alpha = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha, successes, trials - successes + 1))
    hi = (
        1.0 if successes == trials
        else float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes))
    )  # fmt: skip
    return lo, hi


@dataclass(frozen=True)
class DpBoundCheck:
    """An attack's operating point against the bound (epsilon, delta)-DP puts on it.

    ``bound``: e^eps x (target FPR) + delta, the figure the issue asks to compare with;
    ``bound_at_fpr_upper``: the same at the Clopper-Pearson upper bound of the measured
    FPR (a threshold picked on finitely many non-members may have a higher true FPR);
    ``violated`` only when the TPR's lower confidence bound exceeds that conservative bound,
    so a violation is evidence of a DP bug, not of sampling noise.
    """

    epsilon: float
    delta: float
    point: OperatingPoint
    bound: float
    tpr_lower: float
    tpr_upper: float
    fpr_upper: float
    bound_at_fpr_upper: float

    @property
    def violated(self) -> bool:
        return self.tpr_lower > self.bound_at_fpr_upper

    @property
    def point_within_bound(self) -> bool:
        """The measured TPR itself (no confidence interval) is within e^eps FPR_target + delta."""
        return self.point.tpr <= self.bound

    def as_dict(self) -> dict[str, float | int | bool]:
        p = self.point
        return {
            "epsilon": self.epsilon, "delta": self.delta, "max-fpr": p.max_fpr,
            "tpr": p.tpr, "fpr": p.fpr, "true-positives": p.true_positives,
            "members": p.members, "false-positives": p.false_positives,
            "non-members": p.non_members, "bound": self.bound, "tpr-lower": self.tpr_lower,
            "tpr-upper": self.tpr_upper, "fpr-upper": self.fpr_upper,
            "bound-at-fpr-upper": self.bound_at_fpr_upper,
            "point-within-bound": self.point_within_bound, "violated": self.violated,
        }  # fmt: skip


def check_dp_bound(
    point: OperatingPoint, *, epsilon: float, delta: float, confidence: float = 0.95
) -> DpBoundCheck:
    """Compare an operating point with the (epsilon, delta)-DP bound (see ``DpBoundCheck``).

    The bound holds per example, for the unit the DP mechanism protects, averaged over
    the training randomness; members and non-members must be exchangeable (drawn from
    one distribution and assigned at random), or a distribution shift alone can "beat"
    it.
    """
    tpr_lo, tpr_hi = clopper_pearson(point.true_positives, point.members, confidence)
    _, fpr_hi = clopper_pearson(point.false_positives, point.non_members, confidence)
    return DpBoundCheck(
        epsilon=epsilon, delta=delta, point=point,
        bound=dp_tpr_bound(epsilon, delta, point.max_fpr), tpr_lower=tpr_lo, tpr_upper=tpr_hi,
        fpr_upper=fpr_hi, bound_at_fpr_upper=dp_tpr_bound(epsilon, delta, fpr_hi),
    )  # fmt: skip
