"""A DP audit in one training run (Steinke, Nasr and Jagielski, NeurIPS 2023).

Insert m canaries, each included independently with probability 1/2 (``membership``);
train once; score every canary (higher = "looks included"); guess "in" for the
k+ highest scores and "out" for the k- lowest, abstain on the rest
(``choose_guesses``); the number of correct guesses among the r guesses then
yields an empirical lower bound on epsilon at the run's delta
(``epsilon_lower_bound``). An implementation whose bound exceeds its ledger's
epsilon is broken (with probability >= 1 - beta it does not satisfy its claim).

Hand-written on scipy.stats because the maintained implementation
(``jax_privacy.auditing``, Google DeepMind) needs JAX and ``dp_accounting``, which
this toolkit does not install; the p-value is the same computation as the
authors' appendix code and ``jax_privacy.auditing._one_run_p_value``.

Against whom: the number measures what an auditor who chose the canaries and
holds what the scores were computed from (the final model: ``loss_scores``; every
released global model: ``gradient_alignment_scores``) can learn;
weak canaries give a bound near 0 even for a leaky algorithm, so a small bound
is no proof of privacy, only a large one is proof of a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from flwr_privacy.extras import requires

with requires("attacks", "the DP audit (flwr_privacy.attacks.audit)"):
    import torch
    from scipy.optimize import brentq
    from scipy.special import expit
    from scipy.stats import binom
    from torch import nn

__all__ = [
    "AuditResult",
    "one_run_audit",
    "choose_guesses",
    "epsilon_lower_bound",
    "gaussian_canaries",
    "gradient_alignment_scores",
    "loss_scores",
    "membership",
    "mislabel",
    "p_value",
]

# A per-example loss: (model outputs, labels) -> one loss per example (reduction="none").
PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def p_value(correct: int, guesses: int, m: int, eps: float, delta: float) -> float:
    """P[>= ``correct`` right among ``guesses``] for any (eps, delta)-DP training.

    Steinke, Nasr, Jagielski (2023), Theorem 3.1: under eps-DP the number of correct
    guesses is stochastically dominated by Binomial(r, e^eps / (1 + e^eps)); with
    delta > 0 their refinement adds ``2 m delta max_i P[v - i <= B < v] / i`` (the
    paper's (eps, delta) theorem and its appendix code), with B that binomial.
    """
    if not 0 <= correct <= guesses <= m:
        raise ValueError(f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= m ({m})")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and 0 <= delta <= 1, got eps={eps}, delta={delta}")
    q = float(expit(eps))  # accuracy of eps-DP randomized response
    tail = float(binom.sf(correct - 1, guesses, q))  # P[B >= v]
    if delta == 0 or correct == 0:
        return tail
    i = np.arange(1, correct + 1)
    alpha = float(np.max((binom.sf(correct - i - 1, guesses, q) - tail) / i))
    return min(tail + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound(
    correct: int, guesses: int, m: int, delta: float, beta: float = 0.05
) -> float:
    """The largest eps that ``correct`` right out of ``guesses`` rejects at confidence 1 - beta.

    The p-value grows with eps; the bound is where it crosses ``beta`` (brentq), 0
    when even eps = 0 is not rejected (e.g. random guessing).
    """
    if not 0 < beta < 1:
        raise ValueError(f"beta {beta!r} must be in (0, 1)")
    if guesses == 0 or p_value(correct, guesses, m, 0.0, delta) > beta:
        return 0.0
    hi = 1.0
    while p_value(correct, guesses, m, hi, delta) <= beta:
        if hi > 1e3:  # p-value stays below beta: only delta limits it
            return float("inf")
        hi *= 2
    return float(brentq(lambda e: p_value(correct, guesses, m, e, delta) - beta, 0.0, hi,
                        xtol=1e-6))  # fmt: skip


def membership(m: int, seed: int) -> np.ndarray:
    """Which of ``m`` canaries are included: independent fair coins (the audit's randomness)."""
    return np.random.default_rng([seed, 2305_08846]).random(m) < 0.5


def choose_guesses(scores: Sequence[float] | np.ndarray, k_in: int, k_out: int) -> np.ndarray:
    """+1 ("in") for the ``k_in`` highest scores, -1 ("out") for the ``k_out`` lowest, else 0."""
    s = np.asarray(scores, dtype=float)
    if k_in < 0 or k_out < 0 or k_in + k_out > len(s):
        raise ValueError(f"k_in={k_in}, k_out={k_out} must be >= 0 and sum to <= {len(s)}")
    order = np.argsort(s, kind="stable")
    guesses = np.zeros(len(s), dtype=int)
    guesses[order[len(s) - k_in :]] = 1
    guesses[order[:k_out]] = -1
    return guesses


@dataclass(frozen=True)
class AuditResult:
    """One audit's outcome: canaries, guesses, correct guesses and the epsilon lower bound.

    ``candidates`` is how many (k_in, k_out) pairs were tried; the bound holds at
    confidence 1 - beta for all of them together (Bonferroni: each at beta / candidates).
    """

    m: int
    k_in: int
    k_out: int
    guesses: int
    correct: int
    epsilon: float
    delta: float
    beta: float
    candidates: int

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def one_run_audit(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    beta: float = 0.05,
    ks: Sequence[tuple[int, int]] | None = None,
) -> AuditResult:
    """The best bound over guess counts ``ks`` with a union bound over them.

    Default ``ks``: k_in = k_out = k for k in m/20, m/10, m/5, m/2 (at least 1):
    few candidates, so the Bonferroni cost (beta / 4) is small, while covering
    strong attacks (few confident guesses) and weak ones (many guesses).
    """
    s, inc = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    if s.shape != inc.shape:
        raise ValueError(f"scores {s.shape} and included {inc.shape} differ in shape")
    m = len(s)
    if ks is None:
        ks = sorted({(k, k) for k in (max(1, m // f) for f in (20, 10, 5, 2)) if 2 * k <= m})
    best: AuditResult | None = None
    for k_in, k_out in ks:
        g = choose_guesses(s, k_in, k_out)
        r = int(np.count_nonzero(g))
        v = int(np.count_nonzero((g == 1) & inc) + np.count_nonzero((g == -1) & ~inc))
        eps = epsilon_lower_bound(v, r, m, delta, beta / len(ks))
        if best is None or eps > best.epsilon:
            best = AuditResult(m=m, k_in=k_in, k_out=k_out, guesses=r, correct=v, epsilon=eps,
                               delta=delta, beta=beta, candidates=len(ks))  # fmt: skip
    if best is None:
        raise ValueError("no (k_in, k_out) candidate: give ks or at least 2 canaries")
    return best


def gaussian_canaries(
    m: int, shape: tuple[int, ...], num_classes: int, *, scale: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` out-of-distribution inputs ~ N(0, scale^2) of ``shape`` with uniformly random labels.

    Random labels make each canary's label a fact only its own inclusion can teach
    the model (a mislabeled/OOD canary, Steinke et al.'s black-box setting).
    """
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn((m, *shape), generator=g)
    y = torch.randint(0, num_classes, (m,), generator=g)
    return x, y


def mislabel(labels: torch.Tensor, num_classes: int, *, seed: int) -> torch.Tensor:
    """Each label moved to a uniformly random other class: held-out records turned canaries.

    Real inputs keep the canaries distinct to the model (random-noise inputs look alike
    to a CNN, so their random labels interfere); only inclusion teaches the wrong label.
    """
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, labels.shape, generator=g)
    return (labels + shift) % num_classes


@torch.no_grad()
def loss_scores(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    loss: PerExampleLoss,
    *,
    reference: nn.Module | None = None,
) -> np.ndarray:
    """Per-canary score: minus the final model's loss on it (plus the ``reference``
    model's loss, e.g. the initial one: then the score is the loss drop).

    Subtracting a reference removes what the canary's difficulty alone explains.
    """
    model.eval()
    score = -loss(model(inputs), labels)
    if reference is not None:
        reference.eval()
        score = score + loss(reference(inputs), labels)
    return score.detach().double().numpy()


def gradient_alignment_scores(
    models: Sequence[nn.Module], inputs: torch.Tensor, labels: torch.Tensor, loss: PerExampleLoss
) -> np.ndarray:
    """Per-canary score over a sequence of released models w_0, ..., w_T:
    sum_t <w_{t+1} - w_t, -grad loss_j(w_t)>, how far each step went down canary j's loss.

    An included canary's clipped gradient is part of the steps it was sampled in, so
    its steps align with it; every model a client receives is a DP release the ledger
    covers, so scoring on all of them is within the threat model (any client sees them).
    """
    scores = np.zeros(len(labels))
    for before, after in zip(models[:-1], models[1:], strict=True):
        params = [p for p in before.parameters() if p.requires_grad]
        step = [(a.detach() - b.detach()) for b, a in zip(params, after.parameters(), strict=True)]
        before.eval()
        for j in range(len(labels)):
            grads = torch.autograd.grad(loss(before(inputs[j : j + 1]), labels[j : j + 1]).sum(),
                                        params)  # fmt: skip
            scores[j] -= float(sum((g * s).sum() for g, s in zip(grads, step, strict=True)))
    return scores
