"""Client-side DP called as Flower calls it: the local-DP mod, the ledger, budgets."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from app.config import AppConfig, ClientSettings
from app.dp_client import train_private
from app.dp_config import DpConfig
from app.simulation import resolve_run_config
from flwr_privacy.dp import BUDGET_EXHAUSTED, EPSILON_KEY, BudgetExhausted, PrivacyLedger, ledger_of
from flwr_privacy.dp.settings import DpSettings
from flwr_privacy.mods import local_dp_mod
from flwr_privacy.records import DP_RECORD
from tasks import get_task

pytestmark = pytest.mark.usefixtures("server_identity")
SENT = {"w": np.zeros((4, 5), dtype=np.float32)}
TRAINED = {"w": np.full((4, 5), 3.0, dtype=np.float32)}  # an update of L2 norm 13.4, L1 60


def _dp(**dp: object) -> DpConfig:
    return DpConfig.from_run_config(resolve_run_config({"num-server-rounds": 4, **dp}))


def _message(cfg: ConfigRecord, dp: DpSettings | None = None) -> Message:
    """A train message as the server's BudgetGuard sends it: the DP record next to the config."""
    arrays = ArrayRecord({k: Array(v) for k, v in SENT.items()})
    content = RecordDict({"arrays": arrays, "config": cfg})
    if dp is not None:
        content[DP_RECORD] = dp.to_record()
    return Message(content, dst_node_id=1, message_type="train")


def _local(server_round: int = 1, **dp: object) -> Message:
    return _message(ConfigRecord({"seed": 0, "server-round": server_round}), _dp(**dp))


def _trained(msg: Message, ctx: Context) -> Message:
    arrays = ArrayRecord({k: Array(v) for k, v in TRAINED.items()})
    metrics = MetricRecord({"num-examples": 10})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2},
                   state=RecordDict(), run_config={})  # fmt: skip


def _update(reply: Message) -> np.ndarray:
    return reply.content["arrays"]["w"].numpy() - SENT["w"]


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_local_dp_clips_noises_and_keeps_the_ledger_across_rounds(mechanism: str) -> None:
    # Prepare: a tiny clip, so the noise (scale ~ clip) dwarfs the clipped update
    ctx = _context()
    dp = {"dp.mode": "local", "dp.local-mechanism": mechanism, "dp.max-grad-norm": 0.1,
          "dp.l1-clip": 0.1, "dp.epsilon": 40.0}  # fmt: skip
    # Execute: two rounds through the mod
    first = local_dp_mod(_local(1, **dp), ctx, _trained)
    second = local_dp_mod(_local(2, **dp), ctx, _trained)
    # Assert: the 3.0-per-coordinate update is gone (clipped to 0.1 overall), noise added
    update = _update(first)
    assert np.abs(update).max() < 2.0 and np.std(update) > 0
    assert not np.allclose(update, _update(second))  # fresh noise per round
    ledger = ledger_of(ctx, _dp(**dp))
    assert ledger.rounds == 2
    eps1, eps2 = first.content["metrics"][EPSILON_KEY], second.content["metrics"][EPSILON_KEY]
    assert 0 < eps1 < eps2 == pytest.approx(ledger.epsilon())
    if mechanism == "laplace":  # basic composition: epsilon / rounds per release
        assert (eps1, eps2) == pytest.approx((10.0, 20.0))
    else:  # the planned noise spends the budget over the 4 planned rounds, not sooner
        assert eps2 < 40.0


def test_gaussian_epsilon_is_the_accountants_for_the_noise_flower_added() -> None:
    dp = {"dp.mode": "local", "dp.noise-multiplier": 2.0, "dp.max-grad-norm": 1.0}
    reply = local_dp_mod(_local(1, **dp), _context(), _trained)
    expected = PrivacyLedger(delta=1e-5, gaussian=[(2.0, 1.0, 1)]).epsilon()
    assert reply.content["metrics"][EPSILON_KEY] == pytest.approx(expected)
    # Flower's LocalDpMod: update clipped to norm 1, then N(0, (z * 2 * clip)^2) per coordinate
    assert 2.5 < np.std(_update(reply)) < 6.0


def test_a_client_at_its_budget_declines_and_stays_declined() -> None:
    ctx = _context()
    dp = {"dp.mode": "local", "dp.local-mechanism": "laplace", "dp.epsilon": 2.0}
    replies = [local_dp_mod(_local(r, **dp), ctx, _trained) for r in range(1, 6)]
    assert [r.has_error() for r in replies] == [False] * 4 + [True]  # 4 planned rounds of 0.5
    assert replies[-1].error.code == BUDGET_EXHAUSTED
    assert "privacy budget exhausted" in replies[-1].error.reason
    assert "budget epsilon = 2" in replies[-1].error.reason


def test_other_messages_and_modes_pass_through() -> None:
    seen = []

    def call_next(msg: Message, ctx: Context) -> Message:
        seen.append(msg)
        return _trained(msg, ctx)

    reply = local_dp_mod(_local(1, **{"dp.mode": "dp-sgd"}), _context(), call_next)
    assert len(seen) == 1 and np.allclose(_update(reply), 3.0)


def _tabular_round(ctx: Context, server_round: int, **dp: object) -> tuple[dict, object]:
    """One real breast-cancer training round through ``train_private``."""
    run = resolve_run_config({"num-server-rounds": 2, "local-epochs": 1, **dp})
    app_cfg = AppConfig.from_run_config(run)
    task = get_task("breast-cancer")
    x = task.load_arrays()[0]
    cfg = ConfigRecord({**app_cfg.client_config(), "server-round": server_round,
                        "standardize-mean": x.mean(0).tolist(),
                        "standardize-std": x.std(0).tolist()})  # fmt: skip
    settings = ClientSettings.from_message_config(cfg, partition_id=0)
    data = task.load_partition(0, 2, settings.spec)
    model = task.build_model()
    task.set_standardization(model, cfg["standardize-mean"], cfg["standardize-std"])
    seen = {}
    original = task.train
    msg = _message(cfg, app_cfg.dp)

    def spy(model, train, settings):  # records what the task trained on
        seen["x"] = train.tensors[0].clone()
        return original(model, train, settings)

    task.train = spy
    try:
        metrics = train_private(task, model, data, settings.train, msg, ctx, app_cfg.dp)
    finally:
        del task.train
    return metrics, seen.get("x")


def test_input_perturbation_spends_its_epsilon_once_on_the_same_noisy_records() -> None:
    ctx = _context()
    first, x1 = _tabular_round(ctx, 1, **{"dp.input-epsilon": 2.0})
    second, x2 = _tabular_round(ctx, 2, **{"dp.input-epsilon": 2.0})
    assert first[EPSILON_KEY] == second[EPSILON_KEY] == 2.0  # no extra spend per round
    assert np.array_equal(x1.numpy(), x2.numpy())  # re-released, not re-noised


def test_laplace_sgd_follows_its_schedule_and_declines_past_the_plan() -> None:
    ctx, dp = _context(), {"dp.mode": "laplace-sgd", "dp.epsilon": 6.0,
                           "dp.laplace-increment": 2.0}  # fmt: skip
    first, _ = _tabular_round(ctx, 1, **dp)
    second, _ = _tabular_round(ctx, 2, **dp)
    # 2 planned epochs: eps_1 + (eps_1 + 2) = 6 -> [2, 4]
    assert (first["dp-round-epsilon"], second["dp-round-epsilon"]) == pytest.approx((2.0, 4.0))
    assert second[EPSILON_KEY] == pytest.approx(6.0)
    with pytest.raises(BudgetExhausted, match="epsilon would reach"):
        _tabular_round(ctx, 3, **dp)
