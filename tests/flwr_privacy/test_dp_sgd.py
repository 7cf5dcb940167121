"""Opacus DP-SGD on a client: per-example clipping really bounds each example's push."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from flwr_privacy.dp import DpSgd, sampling, train_dp_sgd


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 1))
    nn.init.zeros_(model[0].weight)
    nn.init.zeros_(model[0].bias)
    return model


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out.squeeze(-1), y)


def _huge_gradients(n: int = 64) -> TensorDataset:
    # Every example pulls the weights with a gradient norm of about 2e6.
    return TensorDataset(torch.full((n, 4), 1000.0), torch.full((n,), 1000.0))


def test_each_example_moves_the_model_at_most_lr_times_clip() -> None:
    # Prepare: negligible noise, so only clipping limits the step
    data, clip, lr = _huge_gradients(), 0.5, 1.0
    dp = DpSgd(noise_multiplier=1e-9, max_grad_norm=clip)
    model = _model()
    # Execute: one epoch of Poisson-sampled batches of expected size 16
    _, (z, q, steps) = train_dp_sgd(model, data, _mse, dp, epochs=1, batch_size=16, lr=lr, seed=3)
    # Assert: Opacus divides the sum of clipped gradients by the expected batch size
    moved = torch.cat([p.detach().flatten() for p in model.parameters()]).norm()
    assert (z, q, steps) == (1e-9, 0.25, 4)
    assert 0 < moved <= lr * clip * len(data) / 16 + 1e-6  # at most each example's clip, summed
    assert moved > 0.1  # and the clipped gradients did move it (unclipped: ~1e6 per step)


def test_noise_scales_with_the_multiplier_and_release_is_reported() -> None:
    data = TensorDataset(torch.randn(200, 4), torch.randn(200))
    quiet, loud = _model(), _model()
    train_dp_sgd(quiet, data, _mse, DpSgd(noise_multiplier=1e-6, max_grad_norm=1.0),
                 epochs=2, batch_size=50, lr=1.0, seed=1)  # fmt: skip
    _, release = train_dp_sgd(loud, data, _mse, DpSgd(noise_multiplier=50.0, max_grad_norm=1.0),
                              epochs=2, batch_size=50, lr=1.0, seed=1)  # fmt: skip
    diff = torch.cat([(a - b).flatten() for a, b in zip(quiet.parameters(), loud.parameters(),
                                                        strict=True)])  # fmt: skip
    # 8 steps of noise std lr * 50 * 1 / 50 = 1 per coordinate: about sqrt(8 * 5) = 6.3
    assert 1.0 < diff.norm() < 15.0  # (about 0.0 without the noise: same batches, same seed)
    assert release == (50.0, *sampling(200, 50)[:1], 8)


def test_model_stays_a_plain_module() -> None:
    model = _model()
    keys = list(model.state_dict())
    train_dp_sgd(model, _huge_gradients(), _mse, DpSgd(noise_multiplier=1.0, max_grad_norm=1.0),
                 epochs=1, batch_size=16, lr=0.1)  # fmt: skip
    assert list(model.state_dict()) == keys
    assert all(not hasattr(p, "grad_sample") or p.grad_sample is None for p in model.parameters())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"noise_multiplier": -1.0, "max_grad_norm": 1.0}, "noise multiplier -1.0"),
    ({"noise_multiplier": 1.0, "max_grad_norm": 0.0}, "max grad norm 0.0"),
    ({"noise_multiplier": 1.0, "max_grad_norm": 1.0, "grad_sample_mode": "ew"}, "'ew'"),
])  # fmt: skip
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DpSgd(**kwargs)


def test_one_step_is_divided_by_the_shared_batch_size_and_empty_batches_are_noised() -> None:
    # Prepare: 3 identical examples whose gradients clip to the same unit vector; batch size 2
    # gives Poisson rate 1/2, so Opacus' own divisor would be q * n = 1.5, ours is 2
    data, dp = _huge_gradients(3), DpSgd(noise_multiplier=1e-9, max_grad_norm=1.0)
    sampled = []
    for seed in range(40):
        model = _model()
        # Execute: one step (distributed DP)
        _, (_, q, steps) = train_dp_sgd(model, data, _mse, dp, epochs=1, batch_size=2, lr=1.0,
                                        seed=seed, max_steps=1)  # fmt: skip
        moved = float(torch.cat([p.detach().flatten() for p in model.parameters()]).norm())
        # Assert: k sampled examples move the model by exactly k / 2; even k = 0 takes its
        # (noise-only) step, which skipping would leave at exactly 0
        assert (q, steps) == (0.5, 1) and moved > 0
        assert abs(2 * moved - round(2 * moved)) < 1e-4
        sampled.append(round(2 * moved))
    assert 0 in sampled and set(sampled) <= {0, 1, 2, 3}
