"""Split a labelled dataset over N clients the way flwr-datasets' partitioners do.

Partitions are index arrays into the training set, so any loader (tabular or
image) can reuse them and tests can check disjointness and completeness.

Every ClientApp message in a deployment runs in a fresh process, so this module
imports no heavy library at import time: ``iid`` and the held-out split are
computed here with numpy (equal, index for index, to flwr-datasets'
``IidPartitioner`` on a seeded shuffle and to scikit-learn's stratified
``train_test_split``; tests pin both), and flwr-datasets (Hugging Face
``datasets``, pandas, seaborn) is imported only for ``dirichlet``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

PARTITIONERS = ("iid", "dirichlet")


def partition_indices(
    labels: np.ndarray,
    *,
    num_partitions: int,
    partitioner: str = "iid",
    alpha: float = 1.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """Return the training-sample indices of every partition.

    ``iid`` shuffles with ``seed`` before equal-size sharding (flwr-datasets'
    ``IidPartitioner`` shards contiguously). ``dirichlet`` draws per-class
    proportions from Dirichlet(``alpha``) (label skew: smaller is more skewed).
    Every sample lands in exactly one partition.
    """
    n = len(labels)
    if partitioner not in PARTITIONERS:
        raise ValueError(f"partitioner must be one of {PARTITIONERS}, got {partitioner!r}")
    if not 1 <= num_partitions <= n:
        raise ValueError(
            f"num_partitions must be between 1 and the number of samples ({n}), "
            f"got {num_partitions}"
        )
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if partitioner == "iid":
        return _iid(n, num_partitions, seed)
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner

    table = Dataset.from_dict({"index": np.arange(n), "label": np.asarray(labels)})
    # flwr-datasets resamples 10 times when a partition comes out too small;
    # strong skew (small alpha, many clients) may need fresh seeds beyond that.
    for attempt in range(_DIRICHLET_SEEDS):
        part = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=alpha,
            min_partition_size=2,  # one sample to train on, one to validate on
            self_balancing=False,
            shuffle=True,
            seed=seed + attempt * 7919,
        )
        part.dataset = table
        try:
            return _load_all(part, num_partitions)
        except ValueError:
            continue
    raise ValueError(
        f"Dirichlet(alpha={alpha}) could not give each of {num_partitions} clients at "
        f"least 2 of {n} samples; raise dirichlet-alpha or use fewer clients"
    )


_DIRICHLET_SEEDS = 20


def _iid(n: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    """flwr-datasets' ``IidPartitioner`` on ``Dataset.shuffle(seed)``, without the import.

    The shuffle is ``np.random.default_rng(seed).permutation(n)``; partition ``i``
    is the ``i``-th contiguous shard (``Dataset.shard(contiguous=True)``).
    """
    order = np.random.default_rng(seed).permutation(n)
    div, mod = divmod(n, num_partitions)
    parts = []
    for i in range(num_partitions):
        start = div * i + min(i, mod)
        end = start + div + (1 if i < mod else 0)
        parts.append(np.sort(order[start:end].astype(np.int64)))
    return parts


def _load_all(part: Partitioner, num_partitions: int) -> list[np.ndarray]:
    with warnings.catch_warnings():
        # The Dirichlet partitioner warns on each resample; resampling is expected.
        warnings.simplefilter("ignore", UserWarning)
        return [
            np.sort(np.asarray(part.load_partition(i)["index"], dtype=np.int64))
            for i in range(num_partitions)
        ]


def train_val_split(
    indices: np.ndarray, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's indices into local train and validation parts.

    Both parts keep at least one sample when the partition has two or more.
    """
    if len(indices) < 2:
        raise ValueError(
            f"a partition needs at least 2 samples (train + validation), got {len(indices)}"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(indices)
    n_val = int(round(val_fraction * len(indices)))
    n_val = min(max(n_val, 1), len(indices) - 1)
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def holdout_split(
    labels: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, seeded, stratified train/test split of a dataset without one.

    The same indices as scikit-learn's ``train_test_split(..., test_size=test_fraction,
    stratify=labels, random_state=seed)`` (its ``StratifiedShuffleSplit``), sorted.
    """
    labels = np.asarray(labels)
    n = len(labels)
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    classes, y_indices, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2 or min(n_train, n_test) < len(classes):
        raise ValueError(
            f"a stratified split of {n} labels with test fraction {test_fraction} needs at "
            f"least 2 samples per class and {len(classes)} (the number of classes) on each "
            f"side; class counts {counts.tolist()}"
        )
    by_class = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i, members in enumerate(by_class):
        shuffled = members.take(rng.permutation(counts[i]), mode="clip")
        train.extend(shuffled[: n_i[i]])
        test.extend(shuffled[n_i[i] : n_i[i] + t_i[i]])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    """scikit-learn's ``_approximate_mode``: per-class draws, ties broken with ``rng``.

    Same steps and the same calls on ``rng`` as scikit-learn 1.x (BSD-3-Clause), so
    the split equals ``train_test_split``'s (``test_holdout_split_equals_scikit_learn``).
    """
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


@dataclass(frozen=True)
class PartitionSpec:
    """Everything a client needs to find its own partition, identical on all nodes."""

    partitioner: str = "iid"
    alpha: float = 1.0
    seed: int = 0
    val_fraction: float = 0.2

    def split(self, labels: np.ndarray, num_partitions: int) -> list[np.ndarray]:
        return partition_indices(
            labels,
            num_partitions=num_partitions,
            partitioner=self.partitioner,
            alpha=self.alpha,
            seed=self.seed,
        )

    def client_split(
        self, labels: np.ndarray, partition_id: int, num_partitions: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices of this client's local train and validation samples."""
        if not 0 <= partition_id < num_partitions:
            raise ValueError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")
        mine = self.split(labels, num_partitions)[partition_id]
        return train_val_split(mine, val_fraction=self.val_fraction, seed=self.seed + partition_id)
