"""Partitioning: disjoint, complete, seeded; Dirichlet skew visible."""

import numpy as np
import pytest

from data.partition import PartitionSpec, holdout_split, partition_indices, train_val_split

LABELS = np.array([0] * 300 + [1] * 200)


def _label_shares(parts: list[np.ndarray]) -> np.ndarray:
    return np.array([LABELS[p].mean() for p in parts])


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_partitions_are_disjoint_and_complete(partitioner: str) -> None:
    # Execute
    parts = partition_indices(LABELS, num_partitions=10, partitioner=partitioner, alpha=0.3, seed=1)
    # Assert
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS)
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))
    assert all(len(p) >= 2 for p in parts)


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_partitions_are_seeded(partitioner: str) -> None:
    a = partition_indices(LABELS, num_partitions=5, partitioner=partitioner, alpha=0.5, seed=3)
    b = partition_indices(LABELS, num_partitions=5, partitioner=partitioner, alpha=0.5, seed=3)
    c = partition_indices(LABELS, num_partitions=5, partitioner=partitioner, alpha=0.5, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_is_balanced_and_shuffled() -> None:
    parts = partition_indices(LABELS, num_partitions=10, partitioner="iid", seed=0)
    assert {len(p) for p in parts} == {50}
    # Shuffled: each partition mixes both classes close to the global 40 %.
    assert np.all(np.abs(_label_shares(parts) - 0.4) < 0.25)


def test_dirichlet_skew_is_visible() -> None:
    iid = partition_indices(LABELS, num_partitions=10, partitioner="iid", seed=0)
    skew = partition_indices(LABELS, num_partitions=10, partitioner="dirichlet", alpha=0.1, seed=0)
    # Spread of per-client label shares is far larger under Dirichlet(0.1).
    assert _label_shares(skew).std() > 3 * _label_shares(iid).std()
    assert np.std([len(p) for p in skew]) > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_partitions": 501}, "num_partitions"),
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": 2, "alpha": 0.0}, "alpha"),
        ({"num_partitions": 2, "partitioner": "shards"}, "partitioner"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        partition_indices(LABELS, **kwargs)


def test_train_val_split_keeps_both_sides() -> None:
    idx = np.arange(10, 15)
    train, val = train_val_split(idx, val_fraction=0.2, seed=0)
    assert len(val) == 1 and len(train) == 4
    assert np.array_equal(np.sort(np.concatenate([train, val])), idx)
    tiny_train, tiny_val = train_val_split(np.array([7, 9]), val_fraction=0.01, seed=0)
    assert len(tiny_train) == 1 and len(tiny_val) == 1
    with pytest.raises(ValueError, match="at least 2"):
        train_val_split(np.array([1]), val_fraction=0.2, seed=0)


def test_holdout_split_is_stratified_and_fixed() -> None:
    train, test = holdout_split(LABELS, test_fraction=0.2, seed=42)
    assert len(test) == 100 and len(np.intersect1d(train, test)) == 0
    assert LABELS[test].mean() == pytest.approx(0.4, abs=0.01)
    assert np.array_equal(test, holdout_split(LABELS, test_fraction=0.2, seed=42)[1])


def test_client_split_checks_partition_id() -> None:
    spec = PartitionSpec()
    with pytest.raises(ValueError, match="partition-id"):
        spec.client_split(LABELS, 10, 10)


@pytest.mark.parametrize(("n", "num_partitions", "seed"), [(500, 10, 0), (569, 3, 7), (13, 4, 2)])
def test_iid_equals_flwr_datasets_iid_partitioner(n: int, num_partitions: int, seed: int) -> None:
    """The numpy ``iid`` path gives flwr-datasets' partitions, index for index."""
    from datasets import Dataset
    from flwr_datasets.partitioner import IidPartitioner

    labels = np.arange(n) % 3
    part = IidPartitioner(num_partitions=num_partitions)
    part.dataset = Dataset.from_dict({"index": np.arange(n), "label": labels}).shuffle(seed=seed)
    expected = [np.sort(np.asarray(part.load_partition(i)["index"])) for i in range(num_partitions)]
    got = partition_indices(labels, num_partitions=num_partitions, partitioner="iid", seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize(
    ("labels", "fraction", "seed"),
    [
        (LABELS, 0.2, 42),
        (np.array([0] * 212 + [1] * 357), 0.2, 42),  # WDBC's class counts
        (np.array([0] * 7 + [1] * 5 + [2] * 9 + [3] * 2), 0.3, 3),  # ties broken by the rng
        (np.array(["a", "b", "c"] * 11 + ["d"] * 4), 0.25, 0),
    ],
)
def test_holdout_split_equals_scikit_learn(labels: np.ndarray, fraction: float, seed: int) -> None:
    """Same indices as ``train_test_split(stratify=...)``, without importing scikit-learn."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    got_train, got_test = holdout_split(labels, test_fraction=fraction, seed=seed)
    assert np.array_equal(got_train, np.sort(train))
    assert np.array_equal(got_test, np.sort(test))


def test_holdout_split_refuses_a_class_of_one() -> None:
    with pytest.raises(ValueError, match="at least 2 samples per class"):
        holdout_split(np.array([0, 0, 0, 1]), test_fraction=0.5, seed=0)
