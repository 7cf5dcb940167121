"""Model, generated data and the training loop: plain PyTorch, no Flower, no privacy code.

Images are 1x16x16 stripe patterns, one orientation per class (horizontal, vertical and the
two diagonals) at a random phase, plus Gaussian noise. The data set is generated from a
fixed seed, so every node, every round and every run sees the same images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 4
SIZE = 16
SAMPLES_PER_NODE = 640  # 512 to train, 128 to test
DATA_SEED = 2024

torch.set_num_threads(1)  # small model: one thread is fastest and bit-for-bit reproducible


class Net(nn.Module):
    """A small CNN: two 3x3 convolutions with pooling, then one linear layer (852 weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def generate(num_samples: int, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` images (N, 1, SIZE, SIZE) float32 and their labels (N,) int64."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, num_samples)
    phase = rng.uniform(0, 2 * np.pi, num_samples)[:, None, None]
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    directions = np.array([[0, 1], [1, 0], [1, 1], [1, -1]], dtype=np.float32)  # (dx, dy)
    dx, dy = directions[labels, 0][:, None, None], directions[labels, 1][:, None, None]
    images = np.sin(2 * np.pi * (dx * x + dy * y) / 4 + phase)
    images += rng.normal(0.0, 0.5, images.shape)
    return images[:, None].astype(np.float32), labels.astype(np.int64)


def load_data(
    partition_id: int, num_partitions: int, batch_size: int, shuffle_seed: int
) -> tuple[DataLoader, DataLoader]:
    """This node's share of the generated data: a train loader and a test loader.

    The train loader shuffles with ``shuffle_seed``, so a run is reproducible.
    """
    images, labels = generate(SAMPLES_PER_NODE * num_partitions)
    part = slice(partition_id * SAMPLES_PER_NODE, (partition_id + 1) * SAMPLES_PER_NODE)
    x, y = torch.from_numpy(images[part]), torch.from_numpy(labels[part])
    cut = SAMPLES_PER_NODE * 4 // 5
    order = torch.Generator().manual_seed(shuffle_seed)
    train = DataLoader(TensorDataset(x[:cut], y[:cut]), batch_size, shuffle=True, generator=order)
    test = DataLoader(TensorDataset(x[cut:], y[cut:]), batch_size)
    return train, test


def train(model: nn.Module, loader: DataLoader, epochs: int, lr: float) -> float:
    """Plain SGD; returns the mean training loss of the last epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        total, count = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(y), count + len(y)
    return total / count


def test(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean loss and accuracy on ``loader``."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += int((out.argmax(1) == y).sum())
            count += len(y)
    return loss / count, correct / count
