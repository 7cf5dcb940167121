"""The client's local map: the task's own Taylor-loss training, probed, is affine and exact."""

import numpy as np
import pytest
import torch

from app.encrypted_training import NotAffineError, local_affine_map
from data.partition import PartitionSpec
from flwr_privacy.he.codec import flatten, layout_of, unflatten
from tasks import TrainSettings
from tasks.breast_cancer import BreastCancer


def _client(loss: str, mu: float = 0.0):  # noqa: ANN202
    task = BreastCancer(loss=loss)
    data = task.load_partition(0, 10, PartitionSpec(seed=0))
    settings = TrainSettings(epochs=2, batch_size=16, lr=0.1, proximal_mu=mu, seed=7)
    model = task.build_model()
    x = data.train.tensors[0].numpy()
    task.set_standardization(model, x.mean(axis=0), x.std(axis=0) + 1e-9)
    return task, model, (lambda m: task.train(m, data.train, settings))


def _weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_map_reproduces_the_tasks_own_training(mu: float) -> None:
    # Prepare: a starting model the probes never saw
    task, model, train = _client("taylor", mu)
    layout = layout_of(_weights(model))
    start = np.random.default_rng(1).normal(size=layout.size)
    # Execute
    matrix, offset, error = local_affine_map(model, train, layout)
    reference = task.build_model()
    reference.load_state_dict({k: torch.as_tensor(v) for k, v in unflatten(start, layout).items()})
    reference.standardize.set(model.standardize.mean.numpy(), model.standardize.std.numpy())
    train(reference)
    # Assert: M w + c is what plain Taylor training from w gives (float32 exactness)
    np.testing.assert_allclose(matrix @ start + offset, flatten(_weights(reference))[1],
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    assert error < 1e-4 and matrix.shape == (31, 31)


def test_exact_logistic_loss_is_refused() -> None:
    _, model, train = _client("exact")
    with pytest.raises(NotAffineError, match="breast-cancer.loss = 'taylor'"):
        local_affine_map(model, train, layout_of(_weights(model)))
