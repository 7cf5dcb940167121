"""The one-run DP audit (Steinke et al. 2023): the bound on known counts, and a small audit
of Opacus DP-SGD whose empirical epsilon must stay below the ledger's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from flwr_privacy.attacks.audit import (
    choose_guesses,
    epsilon_lower_bound,
    gradient_alignment_scores,
    loss_scores,
    membership,
    one_run_audit,
    p_value,
)
from flwr_privacy.dp.ledger import gaussian_epsilon
from flwr_privacy.dp.sgd import DpSgd, planned_noise, sampling, train_dp_sgd


def test_perfect_guessing_matches_closed_form() -> None:
    # Prepare / Execute: r guesses all right, delta 0: p = q^r, so eps = logit(beta^(1/r))
    r, beta = 100, 0.05
    eps = epsilon_lower_bound(r, r, 1000, 0.0, beta)
    # Assert
    q = beta ** (1 / r)
    assert eps == pytest.approx(math.log(q / (1 - q)), abs=1e-5)  # 3.4930
    assert eps == pytest.approx(3.4930, abs=1e-4)


def test_perfect_guessing_grows_with_guesses_and_delta_costs_little() -> None:
    bounds = [epsilon_lower_bound(r, r, 1000, 1e-5) for r in (10, 100, 1000)]
    assert 0 < bounds[0] < bounds[1] < bounds[2]
    # every one of m = 1000 canaries guessed right: about 5.8 at delta 1e-5 (5.81 at delta 0)
    assert bounds[2] == pytest.approx(5.782, abs=1e-3)
    assert epsilon_lower_bound(1000, 1000, 1000, 1e-3) < bounds[2]


def test_random_guessing_gives_zero_and_bound_is_monotone_in_correct() -> None:
    assert epsilon_lower_bound(50, 100, 100, 1e-5) == 0.0
    bounds = [epsilon_lower_bound(v, 100, 100, 1e-5) for v in range(50, 101, 5)]
    assert all(a <= b for a, b in zip(bounds, bounds[1:], strict=False))
    assert bounds[-1] > bounds[0]


def test_p_value_is_a_binomial_tail_without_delta() -> None:
    # P[Binomial(4, 1/2) >= 3] = 5/16 at eps = 0
    assert p_value(3, 4, 10, 0.0, 0.0) == pytest.approx(5 / 16)
    with pytest.raises(ValueError, match="correct"):
        p_value(5, 4, 10, 1.0, 0.0)


def test_choose_guesses_and_audit_count_right() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.8, 0.2, 0.3])
    assert choose_guesses(scores, 2, 2).tolist() == [1, -1, 0, 1, -1, 0]
    res = one_run_audit(scores, [True, False, False, True, True, False], delta=1e-5, ks=[(2, 2)])
    assert (res.guesses, res.correct) == (4, 3)


# A small audit: a logistic regression whose canaries each own an input coordinate that no
# real record uses, so a canary's weight moves only if the canary is in the training set
# (the strongest input-space canary for a linear model).
M, D, N, BATCH, EPOCHS, DELTA = 200, 8, 800, 50, 8, 1e-5


def _data(seed: int) -> tuple[TensorDataset, torch.Tensor, torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(N, D + M)
    x[:, :D] = torch.randn(N, D, generator=g)
    y = (x[:, 0] > 0).float()
    cx = torch.zeros(M, D + M)
    cx[:, D:] = 4.0 * torch.eye(M)
    cy = torch.randint(0, 2, (M,), generator=g).float()
    inc = membership(M, seed)
    train = TensorDataset(torch.cat([x, cx[inc]]), torch.cat([y, cy[inc]]))
    return train, cx, cy, inc


def _audit(dp: DpSgd | None, seed: int = 0) -> float:
    train, cx, cy, inc = _data(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(D + M, 1), nn.Flatten(0))
    initial = nn.Sequential(nn.Linear(D + M, 1), nn.Flatten(0))
    initial.load_state_dict(model.state_dict())
    bce = nn.functional.binary_cross_entropy_with_logits
    if dp is None:
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(EPOCHS):
            for xb, yb in torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True):
                opt.zero_grad()
                bce(model(xb), yb).backward()
                opt.step()
    else:
        train_dp_sgd(model, train, bce, dp, epochs=EPOCHS, batch_size=BATCH, lr=0.5,
                     seed=seed + 11)  # fmt: skip
    per_example = lambda out, lab: bce(out, lab, reduction="none")  # noqa: E731
    scores = loss_scores(model, cx, cy, per_example, reference=initial)
    return one_run_audit(scores, inc, delta=DELTA).epsilon


def test_audit_separates_private_from_non_private_and_stays_below_the_ledger() -> None:
    # Prepare: DP-SGD planned for epsilon 1 over the whole schedule (Opacus RDP)
    torch.set_num_threads(1)
    q, per_epoch = sampling(N + int(membership(M, 0).sum()), BATCH)  # the run's own data size
    z = planned_noise(target_epsilon=1.0, delta=DELTA, sample_rate=q, steps=EPOCHS * per_epoch,
                      accountant="rdp")  # fmt: skip
    ledger = gaussian_epsilon([(z, q, EPOCHS * per_epoch)], delta=DELTA, accountant="rdp")
    # Execute
    non_private = _audit(None)
    private = _audit(DpSgd(noise_multiplier=z, max_grad_norm=1.0))
    # Assert: the audit sees the non-private run's leak; the DP run's bound is within its ledger
    assert ledger == pytest.approx(1.0, abs=0.01)
    # 80 of 80 guesses right (k = m / 5): the most this grid shows, 2.87
    assert non_private > 2.5
    assert private < non_private
    assert private <= ledger


def test_gradient_alignment_scores_the_canary_a_step_was_taken_on() -> None:
    # Prepare: one SGD step on canary 0 only
    torch.manual_seed(0)
    before = nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))
    after = nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))
    after.load_state_dict(before.state_dict())
    x, y = torch.eye(4), torch.tensor([1.0, 0.0, 1.0, 0.0])
    per_example = lambda out, lab: nn.functional.binary_cross_entropy_with_logits(  # noqa: E731
        out, lab, reduction="none"
    )
    opt = torch.optim.SGD(after.parameters(), lr=1.0)
    per_example(after(x[:1]), y[:1]).sum().backward()
    opt.step()
    # Execute
    scores = gradient_alignment_scores([before, after], x, y, per_example)
    # Assert: the step went down canary 0's loss most (the others share only the bias)
    assert scores[0] > 0
    assert scores[0] == scores.max()
