"""Split a labelled dataset over N clients with flwr-datasets partitioners.

Partitions are index arrays into the training set, so any loader (tabular or
image) can reuse them and tests can check disjointness and completeness.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

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
    table = Dataset.from_dict({"index": np.arange(n), "label": np.asarray(labels)})
    if partitioner == "iid":
        part = IidPartitioner(num_partitions=num_partitions)
        part.dataset = table.shuffle(seed=seed)
        return _load_all(part, num_partitions)
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
    """Fixed, seeded, stratified train/test split of a dataset without one."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


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
