"""FedProx's proximal term and the shared training loop."""

import copy

import torch
from torch import nn
from torch.utils.data import TensorDataset

from tasks.training import proximal_term, train_epochs


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def test_proximal_term_is_zero_at_global_weights() -> None:
    model = _model()
    global_params = [p.detach().clone() for p in model.parameters()]
    assert proximal_term(model, global_params, mu=0.7).item() == 0.0


def test_proximal_gradient_is_mu_times_distance() -> None:
    # Prepare
    model = _model()
    global_params = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    mu = 0.3
    # Execute
    proximal_term(model, global_params, mu).backward()
    # Assert
    for p, g in zip(model.parameters(), global_params, strict=True):
        torch.testing.assert_close(p.grad, mu * (p.detach() - g))


def test_proximal_term_keeps_local_model_closer_to_global() -> None:
    torch.manual_seed(1)
    data = TensorDataset(torch.randn(64, 3), torch.randn(64, 1))
    start = _model()
    drift = {}
    for mu in (0.0, 5.0):
        model = copy.deepcopy(start)
        train_epochs(
            model, data, nn.functional.mse_loss, epochs=5, batch_size=8, lr=0.1, proximal_mu=mu
        )
        pairs = zip(model.parameters(), start.parameters(), strict=True)
        drift[mu] = sum(((p - q) ** 2).sum().item() for p, q in pairs)
    assert drift[5.0] < drift[0.0]


def test_training_is_reproducible_with_a_seed() -> None:
    data = TensorDataset(torch.randn(40, 3), torch.randn(40, 1))
    runs = []
    for _ in range(2):
        model = _model()
        train_epochs(model, data, nn.functional.mse_loss, epochs=2, batch_size=8, lr=0.05, seed=7)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
