"""dp_sgd_fit: Opacus DP-SGD on the app's own model, optimizer and DataLoader, no Task."""

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flwr_privacy.dp import (
    BUDGET_EXHAUSTED,
    DELTA_KEY,
    EPSILON_KEY,
    BudgetExhausted,
    DpSettings,
    declined,
    dp_sgd_fit,
    ledger_of,
)

pytestmark = pytest.mark.usefixtures("server_identity")


def _data(n: int = 64) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 2)


def _context() -> Context:
    return Context(run_id=1, node_id=3, node_config={}, state=RecordDict(), run_config={})


def _fit(model: nn.Module, loader: DataLoader, ctx: Context) -> dict[str, float]:
    return dp_sgd_fit(model, loader, ctx, epsilon=3.0, delta=1e-5, rounds=2, max_grad_norm=1.0,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                      loss_fn=nn.CrossEntropyLoss())  # fmt: skip


def test_epsilon_reaches_the_target_after_the_planned_rounds_then_declines() -> None:
    # Prepare: 64 examples in batches of 16: q = 1/4, 4 steps a round, 2 rounds planned
    model, loader, ctx = _model(), _data(), _context()
    # Execute: the planned rounds
    first, second = _fit(model, loader, ctx), _fit(model, loader, ctx)
    # Assert: the accountant's epsilon over 8 steps is the target (within Opacus' tolerance)
    assert (first["dp-sample-rate"], first["dp-steps"]) == (0.25, 4)
    assert 0 < first[EPSILON_KEY] < second[EPSILON_KEY] <= 3.0
    assert second[EPSILON_KEY] == pytest.approx(3.0, abs=0.01) and second[DELTA_KEY] == 1e-5
    ledger = ledger_of(ctx, DpSettings(delta=1e-5))
    assert ledger.rounds == 2 and ledger.gaussian[0][2] == 8
    # Execute / Assert: the next round declines before touching the model
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(BudgetExhausted, match=r"epsilon would reach .* > the budget epsilon = 3"):
        _fit(model, loader, ctx)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert ledger_of(ctx, DpSettings(delta=1e-5)).rounds == 2


def test_training_moves_the_model_and_leaves_the_users_loader_alone() -> None:
    model, loader = _model(), _data()
    start = model.weight.detach().clone()
    sampler = loader.sampler
    _fit(model, loader, _context())
    assert not torch.equal(start, model.weight)
    assert loader.sampler is sampler and loader.generator is None


def test_each_client_draws_secret_noise_without_a_default_seed() -> None:
    # Prepare: identical model, data and node id; only the contexts (secret seeds) differ
    a, b = _model(), _model()
    _fit(a, _data(), _context())
    _fit(b, _data(), _context())
    assert not torch.allclose(a.weight, b.weight)


def test_a_fixed_noise_multiplier_is_accounted_as_given() -> None:
    model, ctx = _model(), _context()
    metrics = dp_sgd_fit(model, _data(), ctx, epsilon=50.0, delta=1e-5, rounds=3, epochs=2,
                         noise_multiplier=1.5, optimizer=torch.optim.Adam(model.parameters()),
                         loss_fn=nn.CrossEntropyLoss())  # fmt: skip
    assert (metrics["dp-noise-multiplier"], metrics["dp-steps"]) == (1.5, 8)
    assert metrics[EPSILON_KEY] == pytest.approx(ledger_of(ctx, DpSettings()).epsilon())


def test_declined_reply_carries_the_budget_error() -> None:
    msg = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=1, message_type="train")
    reply = declined(msg, BudgetExhausted("privacy budget exhausted: test"))
    assert reply.error.code == BUDGET_EXHAUSTED
    assert reply.error.reason == "dp: privacy budget exhausted: test"


def test_bad_arguments_name_the_parameter() -> None:
    model = _model()
    common = {"optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
              "loss_fn": nn.CrossEntropyLoss()}  # fmt: skip
    with pytest.raises(ValueError, match="DpSettings.rounds = 0"):
        dp_sgd_fit(model, _data(), _context(), epsilon=3.0, delta=1e-5, rounds=0, **common)
    with pytest.raises(ValueError, match="noise_multiplier = -1.0 is invalid"):
        dp_sgd_fit(model, _data(), _context(), epsilon=3.0, delta=1e-5, rounds=2,
                   noise_multiplier=-1.0, **common)  # fmt: skip
