"""Gradient inversion by an honest-but-curious server: images and labels from one client's update.

The server of plaintext FedAvg sees the model it sent and the model a client sends back,
so it holds the client's update ``new - old``. With the local learning rate ``lr`` and
``steps`` local SGD steps on one batch, ``-update / (lr * steps)`` approximates the batch's
mean gradient at the sent model (exact for one step; for several steps it is the average
gradient along the client's path: the "fedavg" approximation discussed by Geiping et al.
2020, Sec. 6, who also unroll the steps instead). The attack then optimizes dummy images
until their gradient matches it:

- Zhu, Liu, Han 2019, "Deep Leakage from Gradients" (DLG): squared L2 distance between
  the dummy gradient and the observed one (``loss="l2"``, the default);
- Geiping, Bauermeister, Droge, Moeller 2020, "Inverting Gradients - How easy is it to
  break privacy in federated learning?": its optimizer (Adam on the *sign* of the image
  gradient, step decay at 3/8, 5/8, 7/8, box constraints) and total-variation prior, and
  its loss ``1 - cos(grad(x'), g)`` (``loss="cosine"``);
- Zhao, Mopuri, Bilen 2020, "iDLG": the label of a single image from the last layer's
  gradient. With softmax cross-entropy, the bias gradient of the last layer is
  ``softmax - onehot``: negative only at the true class, whatever the activations (iDLG
  states it for the weights of a ReLU network; the bias needs no sign assumption).
  For a batch of ``B`` the bias gradient is ``mean(softmax) - counts / B``; the counts
  are estimated as ``B * (p_hat - g_bias)`` with ``p_hat`` the model's mean softmax on
  random dummy inputs (the heuristic of Wainakh et al. 2022, "LLG", and Geng et al.
  2021), rounded by largest remainder so they sum to ``B``, every class with a negative
  bias gradient getting at least one.

The loop is hand-written: ``breaching`` 0.1.2 (the only packaged implementation on the
index) is from 2022 and pins an old torch/Hydra stack that does not install beside this
project's torch. Metrics are torchmetrics' PSNR and SSIM; a batch's reconstructions are
matched to the originals by the Hungarian assignment (``scipy.optimize.linear_sum_assignment``)
that maximizes the summed PSNR, as in Geiping et al.'s evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flwr_privacy.extras import requires

with requires("attacks", "gradient inversion (flwr_privacy.attacks.inversion)"):
    import torch
    from scipy.optimize import linear_sum_assignment
    from torch import nn
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

Update = Mapping[str, torch.Tensor | np.ndarray] | Sequence[torch.Tensor | np.ndarray]


@dataclass(frozen=True, kw_only=True)
class InversionSettings:
    """How hard the server tries: Geiping et al.'s optimizer, shortened, with DLG's loss.

    ``loss="l2"`` (DLG) is the default: on the small sigmoid LeNet of DLG it reached
    43-50 dB PSNR at batch 1 in 500 iterations where the cosine loss reached 11-15 dB
    (measured here, MNIST; the cosine's scale invariance helps deep ReLU networks, not
    these). ``tv`` weighs total variation of the normalized images; ``bounds`` clamps
    pixels to the model's input range (the server knows the public normalization);
    ``restarts`` keeps the best of several random initializations by matching loss.
    """

    iterations: int = 1000
    lr: float = 0.1
    tv: float = 1e-4
    loss: str = "l2"
    restarts: int = 1
    bounds: tuple[float, float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("cosine", "l2"):
            raise ValueError(f"loss {self.loss!r} is invalid; allowed: 'cosine', 'l2'")
        if self.iterations < 1 or self.restarts < 1 or self.lr <= 0 or self.tv < 0:
            raise ValueError("iterations, restarts >= 1, lr > 0 and tv >= 0 are required")


@dataclass(frozen=True)
class Reconstruction:
    """What the server recovers: images (model input space), labels, final matching loss."""

    images: torch.Tensor
    labels: torch.Tensor
    loss: float


def as_gradient(model: nn.Module, update: Update, *, lr: float, steps: int) -> list[torch.Tensor]:
    """``-update / (lr * steps)`` per parameter, in ``model.parameters()`` order.

    ``update`` is new minus old parameters: a sequence in parameter order, or a mapping
    keyed by parameter name (``named_parameters``/``state_dict`` keys).
    """
    if lr <= 0 or steps < 1:
        raise ValueError(f"lr = {lr!r} must be > 0 and steps = {steps!r} >= 1")
    named = list(model.named_parameters())
    if isinstance(update, Mapping):
        missing = [n for n, _ in named if n not in update]
        if missing:
            raise ValueError(f"the update lacks parameters {missing}")
        values = [update[n] for n, _ in named]
    else:
        values = list(update)
        if len(values) != len(named):
            raise ValueError(f"the update has {len(values)} arrays, the model {len(named)}")
    grads = []
    for (name, p), v in zip(named, values, strict=True):
        t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
        if t.shape != p.shape:
            raise ValueError(f"update {name}: shape {tuple(t.shape)}, model {tuple(p.shape)}")
        grads.append(-t.detach().to(p.dtype) / (lr * steps))
    return grads


def _last_bias(model: nn.Module, grads: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """The gradient of the last bias vector with ``num_classes`` entries."""
    for (_, p), g in reversed(list(zip(model.named_parameters(), grads, strict=True))):
        if p.dim() == 1 and p.numel() == num_classes:
            return g
    raise ValueError(f"the model has no bias of {num_classes} entries: no label recovery")


def recover_labels(
    model: nn.Module,
    grads: list[torch.Tensor],
    *,
    num_classes: int,
    batch_size: int,
    input_shape: Sequence[int],
    seed: int = 0,
) -> torch.Tensor:
    """Labels from the last layer's bias gradient (module docstring: iDLG, count heuristic)."""
    g = _last_bias(model, grads, num_classes).double()
    if batch_size == 1:
        return g.argmin().reshape(1)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dummy = torch.randn(64, *input_shape, generator=gen)
        p_hat = torch.softmax(model(dummy).double(), dim=1).mean(0)
    counts = (batch_size * (p_hat - g)).clamp(min=0)
    floor = torch.floor(counts).long()
    floor = torch.maximum(floor, (g < 0).long())
    while floor.sum() > batch_size:  # more negative classes than examples: keep the most negative
        candidates = torch.where(floor > 0, counts - floor, torch.inf)
        floor[candidates.argmin()] -= 1
    remainder = counts - floor
    for c in torch.argsort(remainder, descending=True)[: batch_size - int(floor.sum())]:
        floor[c] += 1
    while floor.sum() < batch_size:  # all remainders used up: top up the largest estimate
        floor[counts.argmax()] += 1
    return torch.repeat_interleave(torch.arange(num_classes), floor)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (Geiping et al.'s TV prior)."""
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean()
    return dx + dy


def _matching_loss(
    dummy: list[torch.Tensor], target: list[torch.Tensor], kind: str
) -> torch.Tensor:
    if kind == "l2":
        return torch.stack([((d - t) ** 2).sum() for d, t in zip(dummy, target, strict=True)]).sum()
    dot = torch.stack([(d * t).sum() for d, t in zip(dummy, target, strict=True)]).sum()
    dn = torch.stack([(d**2).sum() for d in dummy]).sum()
    tn = torch.stack([(t**2).sum() for t in target]).sum()
    return 1 - dot / (torch.sqrt(dn) * torch.sqrt(tn) + 1e-12)


def invert(
    model: nn.Module,
    grads: list[torch.Tensor],
    *,
    labels: torch.Tensor,
    input_shape: Sequence[int],
    settings: InversionSettings,
    loss_fn: nn.Module | None = None,
) -> Reconstruction:
    """Dummy images whose gradient (with ``labels``) matches ``grads``; the best restart."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    params = [p for p in model.parameters()]
    target = [g.detach() for g in grads]
    gen = torch.Generator().manual_seed(settings.seed)
    best: tuple[float, torch.Tensor] | None = None
    milestones = [int(settings.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    for _ in range(settings.restarts):
        x = torch.randn(len(labels), *input_shape, generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=settings.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        for _ in range(settings.iterations):
            opt.zero_grad()
            dummy = torch.autograd.grad(loss_fn(model(x), labels), params, create_graph=True)
            objective = _matching_loss(list(dummy), target, settings.loss)
            if settings.tv > 0:
                objective = objective + settings.tv * total_variation(x)
            (grad_x,) = torch.autograd.grad(objective, x)
            x.grad = grad_x.sign()
            opt.step()
            sched.step()
            if settings.bounds is not None:
                with torch.no_grad():
                    x.clamp_(*settings.bounds)
        final = _final_loss(model, x, labels, params, target, settings, loss_fn)
        if best is None or final < best[0]:
            best = (final, x.detach().clone())
    assert best is not None
    return Reconstruction(images=best[1], labels=labels, loss=best[0])


def _final_loss(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, params: list[nn.Parameter],
    target: list[torch.Tensor], settings: InversionSettings, loss_fn: nn.Module,
) -> float:  # fmt: skip
    dummy = torch.autograd.grad(loss_fn(model(x), labels), params)
    return _matching_loss(list(dummy), target, settings.loss).item()


def reconstruct(
    model: nn.Module,
    update: Update,
    *,
    lr: float,
    steps: int,
    batch_size: int,
    input_shape: Sequence[int],
    num_classes: int,
    settings: InversionSettings | None = None,
) -> Reconstruction:
    """The whole server-side attack on one client's plaintext update (module docstring)."""
    settings = settings or InversionSettings()
    grads = as_gradient(model, update, lr=lr, steps=steps)
    labels = recover_labels(model, grads, num_classes=num_classes, batch_size=batch_size,
                            input_shape=input_shape, seed=settings.seed)  # fmt: skip
    return invert(model, grads, labels=labels, input_shape=input_shape, settings=settings)


@dataclass(frozen=True)
class Match:
    """Per original image: the PSNR and SSIM of its assigned reconstruction, and its index."""

    psnr: np.ndarray
    ssim: np.ndarray
    assignment: np.ndarray


def psnr(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0) -> float:
    """PSNR of one image pair (torchmetrics), in dB."""
    return float(peak_signal_noise_ratio(a[None], b[None], data_range=data_range))


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0) -> float:
    """SSIM of one image pair (torchmetrics; Gaussian window 11, sigma 1.5)."""
    value = structural_similarity_index_measure(a[None], b[None], data_range=data_range)
    assert isinstance(value, torch.Tensor)  # a tuple only with return_full_image=True
    return float(value)


def match_images(
    originals: torch.Tensor, reconstructions: torch.Tensor, *, data_range: float = 1.0
) -> Match:
    """Best one-to-one match of reconstructions to originals by PSNR (Hungarian assignment).

    Both are N x C x H x W in the same pixel range (e.g. [0, 1]).
    """
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"shapes differ: {tuple(originals.shape)} vs {tuple(reconstructions.shape)}"
        )
    n = len(originals)
    table = np.array(
        [[psnr(originals[i], reconstructions[j], data_range=data_range) for j in range(n)]
         for i in range(n)]
    )  # fmt: skip
    rows, cols = linear_sum_assignment(table, maximize=True)
    order = cols[np.argsort(rows)]
    ssims = [ssim(originals[i], reconstructions[order[i]], data_range=data_range) for i in range(n)]
    return Match(psnr=table[np.arange(n), order], ssim=np.array(ssims), assignment=order)
