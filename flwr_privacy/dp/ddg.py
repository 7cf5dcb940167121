"""Distributed discrete Gaussian (DDG): DP for a sum that only secure aggregation reveals.

Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation" (ICML 2021, arXiv 2102.06387). Each client scales its
update by ``1 / gamma``, rounds it to integers and adds discrete Gaussian noise
``N_Z(0, sigma^2)``; the server sees only the sum (mod ``2^bits``). The unit of privacy
is one training example of one client (add/remove), each client taking one DP-SGD step
a round on a Poisson sample of its data.

Against whom: the server colluding with up to ``t - 1`` clients, with dropouts. Colluders
know their own noise, so a sum is protected by the noise of the ``honest`` clients only
(survivors minus ``t - 1``); plans use the fewest honest clients a round may have and the
ledger records the count a round realised. Modular wrap-around only hurts utility: the
server's view is a function of the sum.

Importing this module loads numpy only; OpenDP and Opacus load on first use.
"""

from __future__ import annotations

import math
import os
import secrets
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np

from flwr_privacy.extras import requires

__all__ = [
    "DdgBudget",
    "DdgPlan",
    "DdgStep",
    "MIN_SIGMA",
    "ORDERS",
    "check_plan_noise",
    "client_step",
    "ddg_epsilon",
    "ddg_rdp",
    "decode",
    "discrete_gaussian",
    "encode",
    "plan_ddg",
    "randomized_round",
    "rdp_to_epsilon",
]

ORDERS: tuple[int, ...] = tuple(range(2, 257))  # integer orders: Zhu-Wang needs them
MIN_SIGMA = 0.5  # Kairouz et al. Theorem 1 assumes sigma >= 1/2 (integer units)
_CHUNK = 8192  # below this a single OpenDP call beats starting threads


@lru_cache(maxsize=16)
def _measurement(sigma: float) -> Any:
    with requires("dp", "distributed DP noise (flwr_privacy.dp.ddg)"):
        import opendp.prelude as dp  # heavy and client-optional: only when sampling

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64")
    return dp.m.make_gaussian(*space, scale=sigma)


def discrete_gaussian(sigma: float, size: int, *, workers: int | None = None) -> np.ndarray:
    """``size`` i.i.d. draws of ``N_Z(0, sigma^2)`` from OpenDP's exact CSPRNG sampler.

    OpenDP's call releases the GIL, so chunks sampled in ``workers`` threads (default:
    up to 4 CPUs) run in parallel; the sampler costs about 25 us a value on one core.
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma = {sigma!r} is invalid; allowed: a finite number > 0")
    if size < 0:
        raise ValueError(f"size = {size!r} is invalid; allowed: an integer >= 0")
    measure = _measurement(float(sigma))
    workers = workers or min(4, os.cpu_count() or 1)
    parts = max(1, min(workers, size // _CHUNK))
    zeros = np.array_split(np.zeros(size, dtype=np.int64), parts)
    if parts == 1:
        return np.asarray(measure(zeros[0]), dtype=np.int64)
    with ThreadPoolExecutor(parts) as pool:
        draws = list(pool.map(measure, zeros))
    return np.concatenate([np.asarray(d, dtype=np.int64) for d in draws])


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(secrets.randbits(128))


def randomized_round(x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Unbiased stochastic rounding ``floor(x + u)``, ``u ~ U[0, 1)^d``: E = x.

    Sensitivity (Kairouz et al.'s unconditional bound, applied to the client's *sum* S):
    for neighbours S and S + v rounded with the same ``u``, each coordinate moves by
    ``|floor(a + v_j + u_j) - floor(a + u_j)| <= ceil(|v_j|) < |v_j| + 1``, so
    ``||round(S + v) - round(S)||_2 <= ||v||_2 + sqrt(d)`` for *every* ``u``. The released
    sum is a mixture over ``u`` of DDG mechanisms with that sensitivity; Renyi divergence
    is jointly quasi-convex, so the mixture's divergence is at most the worst ``u``'s. The
    bound thus holds even against someone who knows ``u``: the rounding randomness protects
    nothing, it only keeps the rounding unbiased (default generator: OS-entropy seeded).
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("randomized_round got NaN or infinity; round finite values only")
    return np.floor(x + _rng(rng).random(x.shape)).astype(np.int64)


def _tau(sigma: float, honest: int) -> float:
    k = np.arange(1, honest, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1.0))))


def ddg_rdp(
    *,
    l2_sensitivity: float,
    sigma: float,
    honest: int,
    dim: int,
    sample_rate: float,
    orders: Sequence[int] = ORDERS,
) -> np.ndarray:
    """RDP of one Poisson-subsampled DDG sum at each integer order (one round).

    Kairouz et al. Theorem 1 / Prop. 14 for the sum of ``honest`` shares ``N_Z(0,
    sigma^2)``: with ``s = l2_sensitivity / (sqrt(honest) sigma)`` and ``tau = 10
    sum_{k<honest} exp(-2 pi^2 sigma^2 k / (k + 1))``, ``eps(a) = min(a s^2 / 2 + tau d,
    a / 2 (s + sqrt(d) tau)^2)``. The paper's third (L1) term is omitted, as in the
    authors' ``compute_rdp_dgaussian_simplified``: it is only ever a further min.
    Subsampling (Poisson, add/remove): see ``_subsampled``; capped by the unsampled ``eps(a)``.
    """
    _check_step(l2_sensitivity, sigma, honest, dim, sample_rate, 1)
    alphas = np.asarray(orders, dtype=np.int64)
    if alphas.ndim != 1 or alphas.size == 0 or np.any(alphas < 2):
        raise ValueError(f"orders = {orders!r} are invalid; allowed: integers >= 2")
    s = l2_sensitivity / (math.sqrt(honest) * sigma)
    tau = _tau(sigma, honest)

    def eps(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return np.minimum(a * s**2 / 2 + tau * dim, a / 2 * (s + math.sqrt(dim) * tau) ** 2)

    plain = eps(alphas)
    if sample_rate == 1.0:
        return plain
    return np.minimum(_subsampled(alphas, float(sample_rate), eps), plain)


def _subsampled(alphas: np.ndarray, q: float, eps: Any) -> np.ndarray:
    """Poisson-subsampled RDP bound, both directions, from the base curve ``eps``.

    With ``Q = M(batch)``, ``P = M(batch + x)``, ``R = P / Q``, mixtures over the rest of
    the batch (and the rounding) handled by joint convexity:

    - add, ``D_a((1-q) Q + q P || Q)``: the binomial expansion of ``E_Q[(1 - q + q R)^a]``
      is exact, ``E_Q[R^l] <= exp((l-1) eps(l))``: Zhu & Wang's Theorem 6 formula, here
      valid for any mechanism because only this direction uses it;
    - remove, ``D_a(Q || (1-q) Q + q P) = log E_Q[(1 + x)^-m] / m``, ``m = a - 1``,
      ``x = q (R - 1) >= -q``: for ``x >= 0`` Taylor gives ``(1+x)^-m <= 1 - m x + C(m+1, 2)
      x^2``; for ``-q <= x < 0`` the series has positive terms and ``|x|^j <= x^2 q^(j-2)``;
      both are ``<= 1 - m x + K x^2`` with ``K q^2 = (1-q)^-m - 1 - m q``. ``E_Q[R] = 1``
      (full support) and ``E_Q[(R-1)^2] = exp(D_2) - 1`` give ``log(1 + ((1-q)^-m - 1 - m q)
      (exp(eps(2)) - 1)) / m``;
    - and Zhu & Wang's Theorem 5, the general bound for both directions; the min wins.
    """
    top = int(alphas.max())
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, top + 1)))])
    a = alphas[:, None].astype(np.float64)
    ls = np.arange(2, top + 1)[None, :]
    log_comb = log_fact[alphas][:, None] - log_fact[ls] - log_fact[np.clip(a - ls, 0, None)
                                                                   .astype(np.int64)]  # fmt: skip
    core = log_comb + ls * math.log(q) + (a - ls) * math.log1p(-q) + (ls - 1) * eps(ls)
    core = np.where(ls <= a, core, -np.inf)
    first = (a - 1) * math.log1p(-q) + np.log1p((a - 1) * q)

    def log_total(weights: np.ndarray) -> np.ndarray:
        terms = np.concatenate([first, core + weights], axis=1)
        peak = terms.max(axis=1, keepdims=True)
        return (peak + np.log(np.exp(terms - peak).sum(axis=1, keepdims=True)))[:, 0]

    add = log_total(np.zeros(ls.shape))
    general = log_total(np.where(ls == 2, 0.0, math.log(3.0)))
    eps2 = float(eps(np.array([2]))[0])
    log_chi2 = eps2 + math.log(-math.expm1(-eps2)) if eps2 > 0 else -math.inf  # exp(eps2) - 1
    with np.errstate(over="ignore", divide="ignore"):
        weight = np.expm1(-(a[:, 0] - 1) * math.log1p(-q)) - (a[:, 0] - 1) * q
        remove = np.logaddexp(0.0, np.log(weight) + log_chi2)
    return np.minimum(general, np.maximum(add, remove)) / (a[:, 0] - 1)


@dataclass(frozen=True)
class DdgStep:
    """Rounds of one DDG release with equal parameters, as a client's ledger keeps them."""

    l2_sensitivity: float  # integer units, rounding inflation included
    sigma: float  # per-client discrete Gaussian scale, integer units
    honest: int  # clients whose noise the adversary does not know
    dim: int
    sample_rate: float
    rounds: int = 1

    def __post_init__(self) -> None:
        _check_step(self.l2_sensitivity, self.sigma, self.honest, self.dim,
                    self.sample_rate, self.rounds)  # fmt: skip

    def rdp(self, orders: Sequence[int] = ORDERS) -> np.ndarray:
        return self.rounds * ddg_rdp(
            l2_sensitivity=self.l2_sensitivity, sigma=self.sigma, honest=self.honest,
            dim=self.dim, sample_rate=self.sample_rate, orders=orders,
        )  # fmt: skip


def _check_step(sens: float, sigma: float, honest: int, dim: int, q: float, n: int) -> None:
    if not (math.isfinite(sens) and sens > 0):
        raise ValueError(f"l2_sensitivity = {sens!r} is invalid; allowed: finite > 0")
    if not (math.isfinite(sigma) and sigma >= MIN_SIGMA):
        raise ValueError(f"sigma = {sigma!r} is invalid; allowed: >= {MIN_SIGMA} "
                         "(integer units: Kairouz et al. Theorem 1 needs it)")  # fmt: skip
    if int(honest) != honest or honest < 1:
        raise ValueError(f"honest = {honest!r} is invalid; allowed: an integer >= 1")
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim = {dim!r} is invalid; allowed: an integer >= 1")
    if not 0 < q <= 1:
        raise ValueError(f"sample_rate = {q!r} is invalid; allowed: 0 < sample_rate <= 1")
    if int(n) != n or n < 0:
        raise ValueError(f"rounds = {n!r} is invalid; allowed: an integer >= 0")


def rdp_to_epsilon(rdp: np.ndarray, delta: float, orders: Sequence[int] = ORDERS) -> float:
    """(epsilon, delta) from an RDP curve by Opacus' conversion (Balle et al. 2020)."""
    with requires("dp", "DP accounting (flwr_privacy.dp.ddg)"):
        from opacus.accountants.analysis.rdp import get_privacy_spent

    with warnings.catch_warnings():  # "optimal order is the largest alpha": still a bound
        warnings.simplefilter("ignore")
        eps, _ = get_privacy_spent(orders=list(orders), rdp=list(rdp), delta=delta)
    return float(eps)


def ddg_epsilon(history: Iterable[DdgStep], delta: float) -> float:
    """Epsilon at ``delta`` of a client's DDG rounds: RDP added over rounds, converted once."""
    steps = [s for s in history if s.rounds > 0]
    if not steps:
        return 0.0
    return rdp_to_epsilon(sum((s.rdp() for s in steps), np.zeros(len(ORDERS))), delta)


@dataclass(frozen=True)
class DdgPlan:
    """What every client needs to encode a round: grid, noise, and the accounted bound."""

    gamma: float  # grid step in update units: integer 1 == gamma
    sigma: float  # per-client discrete Gaussian scale, integer units
    l2_sensitivity: float  # l2_clip / gamma + sqrt(dim): integer units, inflated
    honest: int  # planned minimum of clients whose noise the adversary does not know
    dim: int
    bits: int  # the modular sum lives in Z_{2^bits}

    def step(self, *, sample_rate: float, honest: int | None = None, rounds: int = 1) -> DdgStep:
        """The ledger entry of rounds run with this plan and ``honest`` clients realised."""
        return DdgStep(self.l2_sensitivity, self.sigma, self.honest if honest is None else honest,
                       self.dim, sample_rate, rounds)  # fmt: skip

    def to_record(self) -> dict[str, float | int]:
        return {f"ddg-{f.name.replace('_', '-')}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DdgPlan:
        try:
            raw = {f.name: record[f"ddg-{f.name.replace('_', '-')}"] for f in fields(cls)}
        except KeyError as e:
            raise ValueError(f"DDG plan record lacks {e}; send DdgPlan.to_record()") from e
        return cls(
            gamma=float(raw["gamma"]), sigma=float(raw["sigma"]),
            l2_sensitivity=float(raw["l2_sensitivity"]), honest=int(raw["honest"]),
            dim=int(raw["dim"]), bits=int(raw["bits"]),
        )  # fmt: skip


@lru_cache(maxsize=256)  # a client checks the same plan every round
def _min_sigma(target: float, delta: float, q: float, rounds: int, sens: float,
               honest: int, dim: int) -> float:  # fmt: skip
    def eps(sigma: float) -> float:
        return ddg_epsilon([DdgStep(sens, sigma, honest, dim, q, rounds)], delta)

    lo, hi = MIN_SIGMA, MIN_SIGMA
    if eps(lo) <= target:
        return lo
    while eps(hi) > target:
        lo, hi = hi, hi * 2
        if hi > 1e15:
            raise ValueError(f"epsilon = {target!r} is out of reach; raise epsilon or delta")
    for _ in range(60):  # bisection on a log scale; hi always meets the target
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if eps(mid) <= target else (mid, hi)
    return hi


def plan_ddg(
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    rounds: int,
    l2_clip: float,
    dim: int,
    honest: int,
    bits: int,
    clients: int,
    update_norm: float,
    inflation: float = 0.01,
    k_sigmas: float = 4.0,
) -> DdgPlan:
    """Grid ``gamma`` and per-client ``sigma`` so ``rounds`` DDG rounds spend <= epsilon.

    ``l2_clip`` is one example's L2 sensitivity in update units (``lr * C / B``);
    ``update_norm`` bounds one client's whole update (``lr * C`` times its batch over
    ``B``), ``clients`` the summands. Rule: the finest grid whose worst-case sum (all
    ``clients`` updates on one coordinate, +1 rounding each, plus ``k_sigmas`` noise
    deviations) stays inside ``+-2^(bits-1)``, which minimises the rounding inflation
    ``sqrt(dim) gamma / l2_clip``; refused if that inflation would exceed ``inflation``.
    A sum beyond the range wraps: a utility loss, never a privacy loss.
    """
    if not 0 < epsilon < math.inf or not 0 < delta < 1:
        raise ValueError(f"epsilon = {epsilon!r}, delta = {delta!r}: need epsilon > 0, "
                         "0 < delta < 1")  # fmt: skip
    if not (l2_clip > 0 and update_norm > 0 and inflation > 0 and k_sigmas >= 0):
        raise ValueError("l2_clip, update_norm and inflation must be > 0, k_sigmas >= 0")
    if not 2 <= int(bits) <= 62 or int(clients) < honest:
        raise ValueError(f"bits = {bits!r}, clients = {clients!r}: need 2 <= bits <= 62 and "
                         f"clients >= honest = {honest}")  # fmt: skip
    _check_step(1.0, MIN_SIGMA, honest, dim, sample_rate, rounds)
    half = 2.0 ** (bits - 1) - clients

    def sigma_at(gamma: float) -> tuple[float, float]:
        sens = l2_clip / gamma + math.sqrt(dim)
        return sens, _min_sigma(epsilon, delta, sample_rate, rounds, sens, honest, dim)

    coarsest = inflation * l2_clip / math.sqrt(dim)
    noise = sigma_at(coarsest)[1] * coarsest  # noise std in update units, worst inflation
    gamma = (clients * update_norm + k_sigmas * math.sqrt(clients) * noise) / max(half, 1e-300)
    if half <= 0 or gamma > coarsest:
        raise ValueError(
            f"bits = {bits} are too few: the sum of {clients} updates of norm {update_norm} "
            f"needs a grid coarser than {inflation:.2%} inflation of the clip allows; raise "
            "bits, or lower clients / update_norm, or allow more inflation"
        )
    gamma *= 1 + 1e-9
    sens, sigma = sigma_at(gamma)
    return DdgPlan(gamma=gamma, sigma=sigma, l2_sensitivity=sens, honest=honest, dim=dim,
                   bits=int(bits))  # fmt: skip


def encode(update: np.ndarray, plan: DdgPlan, rng: np.random.Generator | None = None) -> np.ndarray:
    """One client's share: ``round(update / gamma) + N_Z(0, sigma^2)`` as int64."""
    flat = np.asarray(update, dtype=np.float64)
    if flat.shape != (plan.dim,):
        raise ValueError(f"update has shape {flat.shape}; the plan expects ({plan.dim},): "
                         "flatten the update and plan with its dimension")  # fmt: skip
    return randomized_round(flat / plan.gamma, rng) + discrete_gaussian(plan.sigma, plan.dim)


def decode(total: np.ndarray, plan: DdgPlan, count: int) -> np.ndarray:
    """The mean update from a sum of ``count`` shares (already centred from mod 2^bits)."""
    if int(count) != count or count < 1:
        raise ValueError(f"count = {count!r} is invalid; allowed: shares summed, >= 1")
    total = np.asarray(total)
    if total.shape != (plan.dim,):
        raise ValueError(f"sum has shape {total.shape}; the plan expects ({plan.dim},)")
    return total.astype(np.float64) * plan.gamma / count


@dataclass(frozen=True)
class DdgBudget:
    """A client's own distributed-DP budget: what it accepts, whatever the server plans."""

    epsilon: float
    delta: float
    rounds: int
    source: str = "node config"

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any], *, fallback: DdgBudget) -> DdgBudget:
        """``dp-epsilon``, ``dp-delta``, ``dp-rounds`` from node config; ``fallback`` if unset.

        The fallback (in a simulation: the run config) passes through the server, so a
        budget from it is simulated trust, and ``source`` says so.
        """
        keys = ("dp-epsilon", "dp-delta", "dp-rounds")
        if not any(k in node_config for k in keys):
            return fallback
        try:
            eps = float(node_config.get("dp-epsilon", fallback.epsilon))
            delta = float(node_config.get("dp-delta", fallback.delta))
            rounds = int(node_config.get("dp-rounds", fallback.rounds))
        except (TypeError, ValueError):
            raise ValueError(f"node config {keys} must be numbers") from None
        if not (0 < eps < math.inf and 0 < delta < 1 and rounds >= 1):
            raise ValueError(f"node config dp budget epsilon = {eps!r}, delta = {delta!r}, "
                             f"rounds = {rounds!r} is invalid")  # fmt: skip
        return cls(eps, delta, rounds, "node config")


def client_step(plan: DdgPlan, *, l2_clip: float, sample_rate: float) -> DdgStep:
    """One round as this client accounts it: its own clip and sample rate, the verified honest
    count, the noise it adds; the server's ``plan.l2_sensitivity`` is not used."""
    if not (math.isfinite(l2_clip) and l2_clip > 0):
        raise ValueError(f"l2_clip = {l2_clip!r} is invalid; allowed: finite > 0")
    return DdgStep(l2_clip / plan.gamma + math.sqrt(plan.dim), plan.sigma, plan.honest,
                   plan.dim, sample_rate, 1)  # fmt: skip


def check_plan_noise(step: DdgStep, budget: DdgBudget) -> float:
    """The per-client sigma ``budget`` needs over its rounds; ValueError if ``step`` adds less.

    A server that plans too little noise (a tiny sigma, a sensitivity below the real one, or
    an honest count above what the client verified) is refused before anything is sent.
    """
    need = _min_sigma(budget.epsilon, budget.delta, step.sample_rate, budget.rounds,
                      step.l2_sensitivity, step.honest, step.dim)  # fmt: skip
    if step.sigma < need * (1 - 1e-6):
        raise ValueError(
            f"the server's DP plan adds sigma = {step.sigma:.4g} per client; this client's budget "
            f"(epsilon {budget.epsilon:g}, delta {budget.delta:g} over {budget.rounds} rounds, "
            f"from {budget.source}) with its own sensitivity {step.l2_sensitivity:.4g} and "
            f"{step.honest} verified honest clients needs at least {need:.4g}: refused"
        )
    return need
