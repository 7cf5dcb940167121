"""Laplace DP-SGD: the epsilon schedule, per-example L1 clipping, learning, noise, refusals."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from flwr_privacy.dp.laplace import LaplaceReport, clip_l1, epsilon_schedule, train_laplace_sgd

HUGE_EPS = 1e9  # noise scale ~1e-9: negligible, so the run is plain clipped Polyak SGD
TINY_EPS = 1e-3


def _bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), y.to(logits.dtype))


def _blobs(n: int = 64, seed: int = 0) -> TensorDataset:
    """Two well-separated Gaussian blobs in 2-D, labels 0/1: linearly separable."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, 2, generator=gen) * 0.5 + (2.0 * y[:, None] - 1.0) * 1.5
    return TensorDataset(x, y)


def _linear(dtype: torch.dtype = torch.float32) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(2, 1).to(dtype)


def _loss(model: nn.Module, data: TensorDataset) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return float(_bce(model(x), y))


def _train(model: nn.Module, data: TensorDataset, **overrides: object) -> LaplaceReport:
    kwargs: dict = {
        "epochs": 3,
        "batch_size": 16,
        "epoch_epsilons": [HUGE_EPS] * 3,
        "l1_clip": 1.0,
        "loss_bound": 5.0,
        "seed": 0,
    }
    kwargs.update(overrides)
    return train_laplace_sgd(model, data, _bce, **kwargs)


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


# --- epsilon_schedule -------------------------------------------------------------------------


def test_schedule_hand_computed() -> None:
    # Prepare / Execute
    schedule = epsilon_schedule(10.0, 1.0, 4)

    # Assert: eps_1 = (10 - 1 * 6) / 4 = 1
    assert schedule == pytest.approx([1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize(
    ("total", "increment", "epochs"), [(3.0, 0.1, 5), (1.0, 0.0, 3), (7, 2, 1)]
)
def test_schedule_sums_to_total_and_increases(total: float, increment: float, epochs: int) -> None:
    # Prepare / Execute
    schedule = epsilon_schedule(total, increment, epochs)

    # Assert
    assert len(schedule) == epochs
    assert sum(schedule) == pytest.approx(total)
    assert schedule[0] > 0
    diffs = [b - a for a, b in zip(schedule, schedule[1:], strict=False)]
    assert diffs == pytest.approx([increment] * (epochs - 1))


@pytest.mark.parametrize(
    ("total", "increment", "epochs", "match"),
    [
        (0.0, 1.0, 2, "total_epsilon.*0.0"),
        (-1.0, 1.0, 2, "total_epsilon.*-1.0"),
        (1.0, -0.5, 2, "increment.*-0.5"),
        (1.0, 0.1, 0, "epochs.*0"),
        (10.0, 5.0, 4, r"increment=5.0.*total_epsilon=10.0.*epochs=4"),  # eps_1 = -5
        (6.0, 1.0, 4, r"increment=1.0 is too large"),  # eps_1 = 0 exactly
    ],
)
def test_schedule_refuses_bad_inputs(
    total: float, increment: float, epochs: int, match: str
) -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match=match):
        epsilon_schedule(total, increment, epochs)


# --- clipping ---------------------------------------------------------------------------------


def test_clip_l1_bounds_rows_and_keeps_inner_rows() -> None:
    # Prepare: rows with L1 norms well below, at, and far above the bound, plus a zero row
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    rows = rows / rows.abs().sum(dim=1, keepdim=True)  # unit L1 norm
    rows = rows * torch.tensor([0.1, 0.5, 2.0, 1.0, 100.0, 0.0], dtype=torch.float64)[:, None]
    bound = 2.0

    # Execute
    clipped = clip_l1(rows, bound)

    # Assert
    norms = clipped.abs().sum(dim=1)
    assert torch.all(norms <= bound * (1 + 1e-12))
    inside = rows.abs().sum(dim=1) <= bound
    assert torch.equal(clipped[inside], rows[inside])
    assert norms[4] == pytest.approx(bound)
    assert torch.allclose(clipped[4] / norms[4], rows[4] / 100.0)  # direction kept


def test_training_step_clips_each_example() -> None:
    # Prepare: one example has a huge feature, so its raw gradient dwarfs the clip bound; a
    # tiny max_lr makes the Polyak step hit the cap, so an unclipped gradient would show up as
    # a step ~100x too large (the self-normalising Polyak ratio cannot hide it)
    x = torch.tensor([[1.0, -0.5], [0.3, 0.8], [1e3, 0.2], [-0.7, 0.1]], dtype=torch.float64)
    y = torch.tensor([1, 0, 1, 0])
    model, clip, max_lr = _linear(torch.float64), 1.0, 1e-5
    before = _weights(model)
    per_example = []
    for i in range(len(y)):
        model.zero_grad()
        _bce(model(x[i : i + 1]), y[i : i + 1]).backward()
        per_example.append(torch.cat([model.weight.grad.flatten(), model.bias.grad]))
    per_example_t = torch.stack(per_example)
    expected = -max_lr * clip_l1(per_example_t, clip).mean(dim=0)

    # Execute: a single full-batch step without regularisation
    report = _train(
        model,
        TensorDataset(x, y),
        epochs=1,
        batch_size=4,
        epoch_epsilons=[HUGE_EPS],
        l1_clip=clip,
        max_lr=max_lr,
        weight_decay=0.0,
    )

    # Assert
    step = _weights(model) - before
    assert report.steps == 1 and report.mean_lr == max_lr
    assert per_example_t.abs().sum(dim=1).mean() > 100 * clip  # clipping matters here
    assert step.abs().sum() <= max_lr * clip * (1 + 1e-6)
    assert torch.allclose(step, expected, rtol=1e-6, atol=1e-12)


# --- learning and noise -----------------------------------------------------------------------


def test_huge_epsilon_learns_separable_problem() -> None:
    # Prepare
    data, model = _blobs(), _linear()
    initial = _loss(model, data)

    # Execute
    report = _train(model, data)

    # Assert
    assert _loss(model, data) < 0.2 * initial
    assert report.steps == 3 * (64 // 16)
    assert report.epsilons == [HUGE_EPS] * 3
    assert 0 < report.mean_lr <= 1.0
    assert 0 <= report.mean_loss < initial


def test_tiny_epsilon_weights_are_dominated_by_noise() -> None:
    # Prepare: with negligible noise, runs differ only by batch order and land close together
    data = _blobs()
    quiet_a, quiet_b, noisy = _linear(), _linear(), _linear()
    _train(quiet_a, data, seed=0)
    _train(quiet_b, data, seed=1)
    spread = (_weights(quiet_a) - _weights(quiet_b)).norm()

    # Execute
    _train(noisy, data, seed=0, epoch_epsilons=[TINY_EPS] * 3)

    # Assert: same seed (same batches) as quiet_a, yet far away from it
    assert (_weights(noisy) - _weights(quiet_a)).norm() > 20 * spread


def test_same_seed_reproduces_and_other_seed_differs() -> None:
    # Prepare
    data = _blobs()
    first, again, other = _linear(), _linear(), _linear()
    eps = [1.0, 2.0, 3.0]

    # Execute
    report_first = _train(first, data, seed=7, epoch_epsilons=eps)
    report_again = _train(again, data, seed=7, epoch_epsilons=eps)
    _train(other, data, seed=8, epoch_epsilons=eps)

    # Assert
    assert torch.equal(_weights(first), _weights(again))
    assert report_first == report_again
    assert not torch.allclose(_weights(first), _weights(other))


def test_trains_in_place_and_leaves_frozen_parameters_and_keys() -> None:
    # Prepare
    data, model = _blobs(), _linear()
    model.bias.requires_grad_(False)
    keys, bias, weight = list(model.state_dict()), model.bias.clone(), model.weight.clone()

    # Execute
    _train(model, data, proximal_mu=0.1)

    # Assert
    assert list(model.state_dict()) == keys
    assert torch.equal(model.bias, bias)
    assert not torch.allclose(model.weight, weight)


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"epoch_epsilons": [1.0, 1.0]}, "epoch_epsilons has 2 values.*3"),
        ({"epoch_epsilons": [1.0, 0.0, 1.0]}, "epoch_epsilons"),
        ({"epoch_epsilons": [1.0, -2.0, 1.0]}, "epoch_epsilons"),
        ({"l1_clip": 0.0}, "l1_clip.*0.0"),
        ({"l1_clip": -1.0}, "l1_clip.*-1.0"),
        ({"loss_bound": 0.0}, "loss_bound.*0.0"),
        ({"loss_share": 0.0}, "loss_share.*0.0"),
        ({"loss_share": 1.0}, "loss_share.*1.0"),
        ({"batch_size": 65}, r"batch_size=65.*len\(data\)=64"),
        ({"epochs": 0, "epoch_epsilons": []}, "epochs.*0"),
        ({"relaxation": 0.0}, "relaxation.*0.0"),
        ({"max_lr": -1.0}, "max_lr.*-1.0"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"proximal_mu": -0.1}, "proximal_mu"),
    ],
)
def test_refuses_bad_settings(overrides: dict, match: str) -> None:
    # Prepare
    data, model = _blobs(), _linear()
    before = _weights(model)

    # Execute / Assert: refused before touching the model
    with pytest.raises(ValueError, match=match):
        _train(model, data, **overrides)
    assert torch.equal(_weights(model), before)
