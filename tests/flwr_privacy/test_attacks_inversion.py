"""Gradient inversion on a one-layer model: exact recovery, labels, DP-sized noise, metrics."""

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from flwr_privacy.attacks.inversion import (
    InversionSettings,
    as_gradient,
    match_images,
    psnr,
    reconstruct,
    recover_labels,
    ssim,
)

SHAPE = (1, 8, 8)
LR = 0.1


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _image(seed: int) -> torch.Tensor:
    """A smooth 8x8 image in [0, 1] (a blob), so TV is a fair prior."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    cy, cx = torch.rand(2, generator=g) * 4 + 2
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)[None, None]


def _update(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """One local SGD step on (x, y): new - old parameters."""
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    return [-LR * g for g in grads]


def _attack(model: nn.Module, update: list[torch.Tensor], batch: int = 1) -> torch.Tensor:
    settings = InversionSettings(iterations=300, bounds=(0.0, 1.0), tv=0.0, seed=1)
    rec = reconstruct(model, update, lr=LR, steps=1, batch_size=batch, input_shape=SHAPE,
                      num_classes=10, settings=settings)  # fmt: skip
    return rec.images


def test_plaintext_update_of_one_image_is_recovered_exactly() -> None:
    # Prepare
    model, x, y = _model(), _image(0), torch.tensor([3])
    # Execute
    images = _attack(model, _update(model, x, y))
    # Assert: a linear layer's gradient is (softmax - onehot) x^T: the image is in it
    assert match_images(x, images).psnr[0] > 30


def test_labels_from_the_last_bias_gradient() -> None:
    # Prepare: batch 1 (iDLG) and a batch of 6 with repeated labels (count heuristic)
    model = _model()
    single = as_gradient(model, _update(model, _image(1), torch.tensor([7])), lr=LR, steps=1)
    labels = torch.tensor([2, 2, 5, 9, 9, 9])
    xs = torch.cat([_image(i) for i in range(6)])
    batch = as_gradient(model, _update(model, xs, labels), lr=LR, steps=1)
    # Execute
    one = recover_labels(model, single, num_classes=10, batch_size=1, input_shape=SHAPE)
    six = recover_labels(model, batch, num_classes=10, batch_size=6, input_shape=SHAPE)
    # Assert
    assert one.tolist() == [7]
    assert sorted(six.tolist()) == sorted(labels.tolist())


def test_dp_sgd_sized_noise_defeats_the_attack() -> None:
    # Prepare: DP-SGD's view of one example: its gradient clipped to norm 1, plus
    # N(0, z^2) per coordinate with z = 1 (epsilon a few at the README's schedule)
    model, x, y = _model(), _image(0), torch.tensor([3])
    grads = [-u / LR for u in _update(model, x, y)]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    gen = torch.Generator().manual_seed(5)
    noisy = [g / max(1.0, float(norm)) + torch.randn(g.shape, generator=gen) for g in grads]
    # Execute
    clean = match_images(x, _attack(model, _update(model, x, y))).psnr[0]
    private = match_images(x, _attack(model, [-LR * g for g in noisy])).psnr[0]
    # Assert
    assert private < clean - 15 and private < 20


def test_metrics_are_torchmetrics_and_matching_pairs_best_psnr() -> None:
    # Prepare
    a = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    b = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    # Execute
    match = match_images(a, b.flip(0))  # reconstructions in the other order
    # Assert
    assert psnr(a[0], b[0]) == pytest.approx(
        float(peak_signal_noise_ratio(a[:1], b[:1], data_range=1.0))
    )
    assert ssim(a[0], b[0]) == pytest.approx(float(structural_similarity_index_measure(
        a[:1], b[:1], data_range=1.0)))  # fmt: skip
    assert match.assignment.tolist() == [1, 0]
    assert match.psnr[0] == pytest.approx(psnr(a[0], b[0]))
    assert np.all(match.psnr > 20)


def test_update_shapes_are_checked() -> None:
    model = _model()
    with pytest.raises(ValueError, match="arrays"):
        as_gradient(model, [torch.zeros(10)], lr=LR, steps=1)
    with pytest.raises(ValueError, match="lacks"):
        as_gradient(model, {"1.weight": np.zeros((10, 64))}, lr=LR, steps=1)
