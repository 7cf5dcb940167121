"""Distributed discrete Gaussian: sampler, rounding, accountant, plan, encode/decode."""

import math

import numpy as np
import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from scipy import special, stats

from flwr_privacy.dp.ddg import (
    ORDERS,
    DdgPlan,
    DdgStep,
    ddg_epsilon,
    ddg_rdp,
    decode,
    discrete_gaussian,
    encode,
    plan_ddg,
    randomized_round,
)

MNIST = dict(epsilon=3.0, delta=1e-5, sample_rate=0.085, rounds=527, l2_clip=1.0, dim=26106,
             bits=32, clients=10, update_norm=600.0)  # fmt: skip


def dg_pmf(sigma: float, honest: int) -> tuple[np.ndarray, int]:
    """Exact pmf of a sum of ``honest`` N_Z(0, sigma^2), by convolution; returns (pmf, offset)."""
    half = int(math.ceil(25 * sigma)) + 5
    x = np.arange(-half, half + 1)
    one = np.exp(-(x**2) / (2 * sigma**2))
    one /= one.sum()
    pmf = one
    for _ in range(honest - 1):
        pmf = np.convolve(pmf, one)
    return pmf, half * honest


def renyi(p: np.ndarray, q: np.ndarray, alpha: int) -> float:
    keep = (p > 0) & (q > 0)
    log_terms = alpha * np.log(p[keep]) + (1 - alpha) * np.log(q[keep])
    return float(special.logsumexp(log_terms) / (alpha - 1))


def authors_rdp(q: float, s: float, tau: float, dim: int, alpha: int) -> float:
    """Independent scalar transcription of the authors' accountant (Prop. 14 + Zhu-Wang Thm 5)."""

    def eps(a: int) -> float:
        return min(a * s**2 / 2 + tau * dim, a / 2 * (s + math.sqrt(dim) * tau) ** 2)

    if q == 1:
        return eps(alpha)
    logs = [(alpha - 1) * math.log1p(-q) + math.log1p((alpha - 1) * q)]
    for j in range(2, alpha + 1):
        weight = 0.0 if j == 2 else math.log(3)
        logs.append(weight + math.log(math.comb(alpha, j)) + (alpha - j) * math.log1p(-q)
                    + j * math.log(q) + (j - 1) * eps(j))  # fmt: skip
    return min(float(special.logsumexp(logs)) / (alpha - 1), eps(alpha))


@pytest.mark.parametrize("q", [1.0, 0.05])
def test_accountant_matches_the_authors_formula_and_never_exceeds_it(q: float) -> None:
    # Prepare: sigma = 1, 3 honest clients: tau = 10 (e^-pi^2 + e^-(4/3) pi^2), by hand
    tau = 10 * (math.exp(-(math.pi**2)) + math.exp(-4 / 3 * math.pi**2))
    assert tau == pytest.approx(5.365e-4, rel=1e-3)
    s = 4.0 / (math.sqrt(3) * 1.0)
    # Execute
    ours = ddg_rdp(
        l2_sensitivity=4.0, sigma=1.0, honest=3, dim=20, sample_rate=q, orders=range(2, 40)
    )
    theirs = np.array([authors_rdp(q, s, tau, 20, a) for a in range(2, 40)])
    # Assert: equal without subsampling and at order 2; never above the authors' bound
    assert ours[0] == pytest.approx(theirs[0], rel=1e-9)
    assert np.all(ours <= theirs * (1 + 1e-9))
    if q == 1.0:
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.parametrize(("sigma", "honest", "shift"), [(0.5, 3, 1), (0.6, 2, 2), (1.0, 4, 3)])
def test_bound_holds_against_exact_renyi_divergence_both_directions(
    sigma: float, honest: int, shift: int
) -> None:
    # Prepare: the exact pmf of the honest clients' noise sum in one dimension
    pmf, _ = dg_pmf(sigma, honest)
    moved = np.concatenate([np.zeros(shift), pmf[:-shift]])
    for q in (1.0, 0.2):
        mix = (1 - q) * pmf + q * moved
        bound = ddg_rdp(l2_sensitivity=shift, sigma=sigma, honest=honest, dim=1, sample_rate=q,
                        orders=range(2, 13))  # fmt: skip
        for i, alpha in enumerate(range(2, 13)):
            # Execute / Assert: add and remove directions both under the accountant's bound
            assert renyi(mix, pmf, alpha) <= bound[i] * (1 + 1e-9)
            assert renyi(pmf, mix, alpha) <= bound[i] * (1 + 1e-9)


def test_tau_term_is_needed_for_small_sigma() -> None:
    # With sigma = 0.5 the sum of 3 shares is not a discrete Gaussian: its divergence
    # exceeds the plain Gaussian alpha s^2 / 2, so tau is no ornament
    pmf, _ = dg_pmf(0.5, 3)
    moved = np.concatenate([[0.0], pmf[:-1]])
    exact = renyi(moved, pmf, 8)
    gaussian_only = 8 * 1**2 / (2 * 3 * 0.25)
    assert exact > gaussian_only


def test_gaussian_limit_and_subsampling_against_opacus() -> None:
    # One honest share: tau = 0 exactly, no subsampling: the Gaussian alpha s^2 / 2
    plain = ddg_rdp(l2_sensitivity=3.0, sigma=2.0, honest=1, dim=100, sample_rate=1.0)
    np.testing.assert_allclose(plain, np.array(ORDERS) * (1.5**2) / 2, rtol=1e-12)
    # Large sigma: tau ~ 0 for 10 shares, the sum's scale is sqrt(10) sigma
    many = ddg_rdp(l2_sensitivity=30.0, sigma=10.0, honest=10, dim=100, sample_rate=1.0)
    np.testing.assert_allclose(many, np.array(ORDERS) * 0.9 / 2, rtol=1e-9)
    # Subsampled: never below Opacus' exact subsampled Gaussian, within a modest factor
    for z, q in [(1.1, 0.05), (3.08, 0.085), (0.8, 0.01), (5.0, 0.3)]:
        ours = ddg_rdp(l2_sensitivity=1.0, sigma=z, honest=1, dim=10, sample_rate=q)
        exact = np.array(compute_rdp(q=q, noise_multiplier=z, steps=1, orders=list(ORDERS)))
        assert np.all(ours >= exact * (1 - 1e-9))
        assert np.all(ours <= (1.6 if q < 0.1 else 4.5) * exact)
    # In epsilon, the MNIST schedule at z = 3.08 (Opacus: 3.0) costs under 1.2x
    steps = [DdgStep(1.0, 3.08, 1, 10, 0.085, 527)]
    exact = compute_rdp(q=0.085, noise_multiplier=3.08, steps=527, orders=list(ORDERS))
    reference, _ = get_privacy_spent(orders=list(ORDERS), rdp=exact, delta=1e-5)
    assert reference == pytest.approx(3.0, abs=0.05)
    assert reference <= ddg_epsilon(steps, 1e-5) <= 1.2 * reference


@pytest.mark.parametrize("sigma", [0.5, 3.0, 100.0])
def test_discrete_gaussian_moments_and_shape(sigma: float) -> None:
    # Prepare: the exact variance of N_Z(0, sigma^2) (below sigma^2 for small sigma)
    pmf, offset = dg_pmf(sigma, 1)
    x = np.arange(len(pmf)) - offset
    var = float(np.sum(pmf * x**2))
    # Execute: enough draws to take the threaded path
    draws = discrete_gaussian(sigma, 20_000, workers=2)
    # Assert
    assert draws.dtype == np.int64 and draws.shape == (20_000,)
    assert abs(draws.mean()) < 5 * math.sqrt(var / 20_000)
    assert draws.var() == pytest.approx(var, rel=0.06)
    if sigma == 3.0:  # chi-square goodness of fit on |x| <= 9, tails pooled
        edges = np.arange(-10, 11)
        observed = np.array([np.sum(draws <= -10)] + [np.sum(draws == k) for k in edges[1:-1]]
                            + [np.sum(draws >= 10)])  # fmt: skip
        cdf = np.cumsum(pmf)
        inner = [pmf[k + offset] for k in edges[1:-1]]
        expected = np.array([cdf[-10 + offset]] + inner + [1 - cdf[9 + offset]]) * 20_000
        assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-4
    assert not np.array_equal(draws[:1000], discrete_gaussian(sigma, 1000))


def test_discrete_gaussian_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="sigma = -1"):
        discrete_gaussian(-1.0, 3)
    with pytest.raises(ValueError, match="size = -2"):
        discrete_gaussian(1.0, -2)
    assert discrete_gaussian(1.0, 0).shape == (0,)


def test_randomized_round_is_unbiased_and_coupled_sensitivity_holds() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(0, 5, size=50)
    rounded = randomized_round(np.tile(x, (4000, 1)), rng)
    assert np.all((rounded == np.floor(x)) | (rounded == np.ceil(x)))
    np.testing.assert_allclose(rounded.mean(axis=0), x, atol=5 * 0.5 / math.sqrt(4000))
    with pytest.raises(ValueError, match="NaN"):
        randomized_round(np.array([1.0, np.nan]))
    # Coupled rounding (same u): ||round(S + v) - round(S)|| <= ||v|| + sqrt(d), every u
    for scale in (1e-3, 0.3, 2.0, 50.0):
        for seed in range(50):
            s, v = rng.normal(0, 100, 300), rng.normal(0, scale, 300)
            moved = randomized_round(s + v, np.random.default_rng(seed))
            base = randomized_round(s, np.random.default_rng(seed))
            assert np.linalg.norm(moved - base) <= np.linalg.norm(v) + math.sqrt(300)


def test_plan_meets_the_target_and_needs_less_noise_with_more_honest_clients() -> None:
    plans = {h: plan_ddg(honest=h, **MNIST) for h in (5, 8, 10)}
    for h, plan in plans.items():
        spent = ddg_epsilon([plan.step(sample_rate=0.085, rounds=527)], 1e-5)
        assert 2.97 <= spent <= 3.0
        assert plan.honest == h and plan.l2_sensitivity == pytest.approx(
            1.0 / plan.gamma + math.sqrt(26106)
        )
        assert math.sqrt(26106) * plan.gamma <= 0.01  # rounding inflation under 1 % of the clip
        assert 10 * (600 / plan.gamma + 1) + 4 * math.sqrt(10) * plan.sigma < 2**31
    sigmas = [plans[h].sigma * plans[h].gamma for h in (5, 8, 10)]
    assert sigmas[0] > sigmas[1] > sigmas[2]
    # noise of the honest sum: sqrt(h) sigma, equal across h up to the inflation
    central = [math.sqrt(h) * plans[h].sigma * plans[h].gamma for h in (5, 8, 10)]
    assert max(central) / min(central) < 1.01
    assert DdgPlan.from_record(plans[5].to_record()) == plans[5]


def test_plan_refuses_too_few_bits_and_bad_records() -> None:
    with pytest.raises(ValueError, match="bits = 16 are too few"):
        plan_ddg(honest=5, **{**MNIST, "bits": 16})
    with pytest.raises(ValueError, match="lacks 'ddg-sigma'"):
        DdgPlan.from_record({"ddg-gamma": 1.0})


def test_encode_decode_recovers_the_mean_within_the_noise() -> None:
    # Prepare: 5 clients, a plan for 1000 coordinates
    rng = np.random.default_rng(3)
    dim, clients = 1000, 5
    plan = plan_ddg(epsilon=2.0, delta=1e-5, sample_rate=0.1, rounds=50, l2_clip=0.01,
                    dim=dim, honest=3, bits=32, clients=clients, update_norm=1.0)  # fmt: skip
    updates = rng.normal(0, 1 / math.sqrt(dim), size=(clients, dim))
    # Execute: shares summed mod 2^bits, centred, decoded
    total = sum(encode(u, plan) for u in updates)
    half = 2 ** (plan.bits - 1)
    wrapped = (total + half) % (2 * half) - half
    mean = decode(wrapped, plan, clients)
    # Assert: error std = gamma sqrt(k (sigma^2 + 1/4)) / k at most, and close to it
    err = mean - updates.mean(axis=0)
    predicted = plan.gamma * math.sqrt(clients * (plan.sigma**2 + 0.25)) / clients
    assert err.std() == pytest.approx(predicted, rel=0.1)
    assert abs(err.mean()) < 5 * predicted / math.sqrt(dim)
    with pytest.raises(ValueError, match="expects \\(1000,\\)"):
        encode(np.zeros(3), plan)
    with pytest.raises(ValueError, match="count = 0"):
        decode(total, plan, 0)
