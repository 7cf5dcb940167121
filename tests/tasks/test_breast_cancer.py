"""Breast-cancer task: held-out split, standardization without test statistics, learning."""

import numpy as np
import pytest
import torch

from data.partition import PartitionSpec
from data.preprocess import combine
from tasks import TrainSettings, get_task
from tasks.breast_cancer import BreastCancer, binary_metrics


@pytest.fixture(scope="module")
def task() -> BreastCancer:
    return BreastCancer()


def test_holdout_split_is_fixed_and_disjoint(task: BreastCancer) -> None:
    x_train, y_train, x_test, y_test = task.load_arrays()
    assert x_train.shape == (455, 30) and x_test.shape == (114, 30)
    # No test row appears among training rows.
    train_rows = {r.tobytes() for r in x_train}
    assert not any(r.tobytes() in train_rows for r in x_test)
    assert abs(y_test.mean() - y_train.mean()) < 0.02  # stratified


def test_standardization_uses_only_client_training_splits(task: BreastCancer) -> None:
    # Prepare: 5 clients' local training splits (validation and test excluded)
    spec = PartitionSpec(seed=3)
    clients = [task.load_partition(i, 5, spec) for i in range(5)]
    train_x = np.concatenate([c.train.tensors[0].numpy() for c in clients]).astype(np.float64)
    model = task.build_model()
    # Execute
    mean, std = combine([task.feature_moments(c.train) for c in clients]).mean_std()
    task.set_standardization(model, mean, std)
    # Assert: equals pooled training statistics, differs from anything with test rows
    np.testing.assert_allclose(model.standardize.mean.numpy(), train_x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.standardize.std.numpy(), train_x.std(axis=0), rtol=1e-4)
    test_x = task.load_test().tensors[0].numpy()
    with_test = np.concatenate([train_x, test_x]).mean(axis=0)
    assert not np.allclose(model.standardize.mean.numpy(), with_test, rtol=1e-4)


def test_only_trainable_weights_travel(task: BreastCancer) -> None:
    assert set(task.build_model().state_dict()) == {"linear.weight", "linear.bias"}


def test_centralized_training_learns(task: BreastCancer) -> None:
    torch.manual_seed(0)
    data = task.load_partition(0, 1, PartitionSpec(val_fraction=0.1))
    model = task.build_model()
    task.set_standardization(model, *task.feature_moments(data.train).mean_std())
    task.train(model, data.train, TrainSettings(epochs=20, batch_size=32, lr=0.1))
    metrics = task.evaluate(model, task.load_test())
    assert metrics["accuracy"] >= 0.95
    assert metrics["roc-auc"] >= 0.98
    assert set(task.metric_names) <= set(metrics)


def test_binary_metrics_on_hand_made_case() -> None:
    logits = np.array([2.0, -1.0, 0.5, -3.0])
    labels = np.array([1, 1, 0, 0])
    m = binary_metrics(logits, labels, loss=0.3)
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5
    assert m["roc-auc"] == 0.75
    assert "roc-auc" not in binary_metrics(logits, np.ones(4, dtype=int), loss=0.3)


def test_registry_rejects_unknown_task() -> None:
    assert get_task("breast-cancer") is get_task("breast-cancer")
    with pytest.raises(ValueError, match="breast-cancer"):
        get_task("nope")


def test_taylor_loss_is_the_second_order_expansion_of_the_logistic_loss() -> None:
    # Prepare
    task = BreastCancer(loss="taylor")
    z = torch.tensor([-0.2, 0.0, 0.1, 0.3])
    y = torch.tensor([0, 1, 1, 0])
    exact = torch.nn.functional.binary_cross_entropy_with_logits(z, y.float())
    # Execute
    taylor = task.loss_fn(None)(z, y)  # type: ignore[arg-type]
    # Assert: equal up to the 4th-order term near z = 0; quadratic, so its gradient is affine
    assert abs(float(taylor - exact)) < 1e-3
    s = 2.0 * y.float() - 1.0
    expected = (np.log(2.0) - s * z / 2 + z**2 / 8).mean()
    assert torch.isclose(taylor, expected)


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="'breast-cancer.loss' = 'hinge' is invalid"):
        get_task("breast-cancer", {"breast-cancer.loss": "hinge"})
