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


# --- distributed_dp_fit: one clipped step under SecAgg+, the noise the clients' DDG shares


def _ddp_message(plan_kwargs: dict[str, float] | None = None, encoding: str = "ddg") -> Message:
    from dataclasses import asdict

    from flwr_privacy import DistributedDp
    from flwr_privacy.dp.ddg import plan_ddg
    from flwr_privacy.records import SECAGG_RECORD

    loader = _data()
    dp = DistributedDp.for_dp_sgd(3.0, 1e-5, 2, lr=0.5, batch_size=16, min_examples=64)
    plan = plan_ddg(epsilon=dp.epsilon, delta=dp.delta, sample_rate=dp.sample_rate,
                    rounds=dp.rounds, l2_clip=dp.l2_clip, dim=10, honest=4, bits=dp.bits,
                    clients=5, update_norm=dp.update_norm)  # fmt: skip
    fields = asdict(plan) | (plan_kwargs or {})
    record = {"encoding": encoding, **type(plan)(**fields).to_record()}
    assert len(loader) == 4 and dp.sample_rate == 1 / 4 and dp.l2_clip == 0.5 / 16
    content = RecordDict({SECAGG_RECORD: ConfigRecord(record)})
    return Message(content=content, dst_node_id=3, message_type="train")


def _ddp_fit(model: nn.Module, msg: Message, ctx: Context, lr: float = 0.5) -> dict[str, float]:
    from flwr_privacy import distributed_dp_fit
    from flwr_privacy.mods.secagg import SESSION_KEY

    ctx.state[SESSION_KEY] = ConfigRecord({"stand-in": 1})  # as secagg_mod leaves it

    return distributed_dp_fit(model, _data(), msg, ctx, epsilon=3.0, delta=1e-5, rounds=2,
                              lr=lr, loss_fn=nn.CrossEntropyLoss())  # fmt: skip


def test_distributed_fit_takes_one_clipped_step_and_books_the_honest_noise() -> None:
    model, ctx, msg = _model(), _context(), _ddp_message()
    before = [p.detach().clone() for p in model.parameters()]
    first = _ddp_fit(model, msg, ctx)
    pairs = zip(model.parameters(), before, strict=True)
    moved = sum(float((p.detach() - b).norm() ** 2) for p, b in pairs) ** 0.5
    # one step: lr * (sum of clipped per-example gradients) / B, a Poisson batch of ~16
    assert 0 < moved <= 0.5 * 1.0 * 40 / 16, moved
    second = _ddp_fit(model, msg, ctx)
    assert 0 < first[EPSILON_KEY] < second[EPSILON_KEY] <= 3.0 * (1 + 1e-6)
    assert second[DELTA_KEY] == 1e-5
    with pytest.raises(BudgetExhausted, match="budget exhausted"):  # a 3rd of 2 planned rounds
        _ddp_fit(model, msg, ctx)


def test_distributed_fit_refuses_a_plan_too_weak_for_its_own_budget() -> None:
    with pytest.raises(BudgetExhausted, match="needs at least"):  # the server lowered sigma
        _ddp_fit(_model(), _ddp_message({"sigma": 0.6}), _context())
    with pytest.raises(BudgetExhausted, match="needs at least"):  # the client's own step is
        _ddp_fit(_model(), _ddp_message(), _context(), lr=50.0)  # larger than planned for
    model, ctx = _model(), _context()
    ctx.node_config["dp-epsilon"] = 0.1  # a deployment's own, smaller budget wins
    with pytest.raises(BudgetExhausted, match="from node config"):
        _ddp_fit(model, _ddp_message(), ctx)


def test_distributed_fit_refuses_a_plan_that_bypassed_secagg_mod() -> None:
    """A lying server writes a ddg plan into a message for a ClientApp without secagg_mod:
    nothing would mask or noise the update, so the client refuses instead of booking it."""
    from flwr_privacy import distributed_dp_fit

    with pytest.raises(BudgetExhausted, match="did not come through secagg_mod"):
        distributed_dp_fit(_model(), _data(), _ddp_message(), _context(), epsilon=3.0,
                           delta=1e-5, rounds=2, lr=0.5, loss_fn=nn.CrossEntropyLoss())  # fmt: skip


def test_distributed_fit_without_secagg_plan_names_the_fix() -> None:
    plain = Message(content=RecordDict({}), dst_node_id=3, message_type="train")
    with pytest.raises(BudgetExhausted, match="make_secagg_mod"):
        _ddp_fit(_model(), plain, _context())
    with pytest.raises(BudgetExhausted, match="without noise"):
        _ddp_fit(_model(), _ddp_message(encoding="fixed"), _context())


def test_distributed_plan_for_dp_sgd_states_its_inputs() -> None:
    from flwr_privacy import DistributedDp

    dp = DistributedDp.for_dp_sgd(3.0, 1e-5, 3, lr=0.1, batch_size=32, min_examples=500,
                                  max_grad_norm=2.0)  # fmt: skip
    assert (dp.l2_clip, dp.sample_rate, dp.update_norm) == pytest.approx((0.2 / 32, 1 / 16, 0.8))
    with pytest.raises(ValueError, match="min_examples >= 1"):
        DistributedDp.for_dp_sgd(3.0, 1e-5, 3, lr=0.1, batch_size=32, min_examples=0)
