"""Image classification with a DP-compatible CNN (the CNN/DP paper's task).

MNIST, Fashion-MNIST (28x28x1) and CIFAR-10 (32x32x3) from a data root
(``data/images.py``), or GENERATED images of either shape for tests and offline
smoke runs (labelled generated). The CNN uses GroupNorm, never BatchNorm: batch
statistics mix examples, which per-example clipping (DP-SGD) cannot allow.
Normalization uses each dataset's published channel mean/std (public
constants, not fitted on any client's data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from data.images import generated_images, load_images
from tasks.arrays import ArrayTask
from tasks.base import option
from tasks.metrics import accuracy
from tasks.training import LossFn, predict

DATASETS = ("mnist", "fashion-mnist", "cifar10", "generated-gray", "generated-rgb")
NORMALIZATION = {  # channel mean, std of the training images in [0, 1]
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "generated-gray": ((0.5,), (0.5,)),
    "generated-rgb": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
GENERATED = {"generated-gray": (1, 28), "generated-rgb": (3, 32)}


@dataclass(frozen=True)
class DpCnnOptions:
    """The ``dp-cnn.`` run-config sub-table (docs/guides/image-task.md)."""

    dataset: str = "generated-gray"
    data_dir: str = ""
    download: bool = False
    generated_records: int = 2000
    group_norm: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DpCnnOptions:
        d = cls()
        dataset = option(cfg, "dp-cnn.dataset", d.dataset, DATASETS)
        opts = cls(
            dataset=dataset,
            data_dir=option(cfg, "dp-cnn.data-dir", d.data_dir),
            download=option(cfg, "dp-cnn.download", d.download),
            generated_records=option(cfg, "dp-cnn.generated-records", d.generated_records),
            group_norm=option(cfg, "dp-cnn.group-norm", d.group_norm),
        )
        if dataset not in GENERATED and not opts.data_dir:
            raise ValueError(
                f"run-config key 'dp-cnn.data-dir' is empty but dp-cnn.dataset = {dataset!r} "
                "reads images from it (SuperNodes may override it with node config)"
            )
        if opts.generated_records < 20:
            raise ValueError("run-config key 'dp-cnn.generated-records' must be >= 20")
        return opts


class CNN(nn.Module):
    """The DP-SGD literature's small CNN: two strided convs with GroupNorm, tanh, 32 hidden units.

    The shape of Papernot et al. (2021) and Tramer & Boneh (2021), the end-to-end
    CNNs behind the MNIST/Fashion-MNIST records: few parameters (about 26k for
    28x28) keep the noise, which grows with the dimension, small; tanh (a
    tempered sigmoid) keeps activations bounded under clipped, noisy updates.
    GroupNorm after each conv (``group_norm``) steadies training without mixing
    examples; Tramer & Boneh's end-to-end CNN has none.
    """

    def __init__(
        self, channels: int, size: int, num_classes: int = 10, *, group_norm: bool = True
    ) -> None:
        super().__init__()

        def norm(c: int) -> nn.Module:
            return nn.GroupNorm(4, c) if group_norm else nn.Identity()

        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 8, stride=2, padding=2), norm(16), nn.Tanh(),
            nn.MaxPool2d(2, 1),
            nn.Conv2d(16, 32, 4, stride=2), norm(32), nn.Tanh(), nn.MaxPool2d(2, 1),
        )  # fmt: skip
        side = ((size + 4 - 8) // 2 + 1 - 1 - 4) // 2 + 1 - 1
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * side * side, 32), nn.Tanh(), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DpCnn(ArrayTask):
    """10-class image classification; DP-SGD plugs in at ``train`` (Opacus)."""

    name = "dp-cnn"
    metric_names = ("loss", "accuracy")
    num_classes = 10

    def __init__(self, options: DpCnnOptions | None = None) -> None:
        self.options = options or DpCnnOptions()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DpCnn:
        return cls(DpCnnOptions.from_config(cfg))

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        o = self.options
        if o.dataset in GENERATED:
            channels, size = GENERATED[o.dataset]
            x, y = generated_images(o.generated_records, channels=channels, size=size, seed=0)
            xt, yt = generated_images(o.generated_records // 4, channels=channels, size=size,
                                      seed=1)  # fmt: skip
            return x, y, xt, yt
        x, y = load_images(o.dataset, o.data_dir, train=True, download=o.download)
        xt, yt = load_images(o.dataset, o.data_dir, train=False, download=o.download)
        return x, y, xt, yt

    @cached_property
    def _normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = NORMALIZATION[self.options.dataset]
        return torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def to_dataset(self, x: np.ndarray, y: np.ndarray) -> TensorDataset:
        mean, std = self._normalization
        images = (torch.tensor(x, dtype=torch.float32) / 255.0 - mean) / std
        return TensorDataset(images, torch.tensor(y))

    def build_model(self) -> nn.Module:
        _, channels, size, _ = self._arrays[0].shape
        return CNN(channels, size, self.num_classes, group_norm=self.options.group_norm)

    def loss_fn(self, data: Dataset) -> LossFn:
        return nn.functional.cross_entropy

    def evaluate(self, model: nn.Module, data: Dataset) -> dict[str, Any]:
        logits, labels, loss = predict(model, data, nn.functional.cross_entropy)
        return {"loss": loss, "accuracy": accuracy(labels, logits.argmax(axis=1))}
