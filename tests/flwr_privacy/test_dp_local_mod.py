"""Local-DP client mods called as Flower calls them: ``mod(msg, ctx, call_next)``."""

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common import Error
from flwr.common.constant import ErrorCode

from flwr_privacy.dp import (
    BUDGET_EXHAUSTED,
    DELTA_KEY,
    EPSILON_KEY,
    DpSettings,
    PrivacyLedger,
    ledger_of,
)
from flwr_privacy.mods import local_dp_mod, make_local_dp_mod
from flwr_privacy.records import DP_RECORD

pytestmark = pytest.mark.usefixtures("server_identity")

SENT = {"w": np.zeros((4, 5), dtype=np.float32)}
TRAINED = {"w": np.full((4, 5), 3.0, dtype=np.float32)}  # an update of L2 norm 13.4, L1 60


def _message(server_round: int = 1, kind: str = "train", dp: DpSettings | None = None) -> Message:
    arrays = ArrayRecord({k: Array(v) for k, v in SENT.items()})
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})
    if dp is not None:
        content[DP_RECORD] = dp.to_record()
    return Message(content, dst_node_id=1, message_type=kind)


def _trained(msg: Message, ctx: Context) -> Message:
    arrays = ArrayRecord({k: Array(v) for k, v in TRAINED.items()})
    metrics = MetricRecord({"num-examples": 10})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def _context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


def _update(reply: Message) -> np.ndarray:
    return reply.content["arrays"]["w"].numpy() - SENT["w"]


def test_explicit_gaussian_mod_clips_noises_and_reports_the_accountants_epsilon() -> None:
    # Prepare: Flower's LocalDpMod noise std is z * 2 * clip = 4 per coordinate for z = 2
    mod = make_local_dp_mod(epsilon=10.0, delta=1e-5, clip=1.0, rounds=3, noise_multiplier=2.0)
    ctx = _context()
    # Execute
    reply = mod(_message(), ctx, _trained)
    # Assert: the 3.0-per-coordinate update is clipped to norm 1 (0.224 a coordinate) and
    # noised with std 4; 50 fresh clients give 1000 draws, so the std's standard error is
    # 0.09 and +-0.4 is a 4.5-sigma band (20 draws from one reply were a 2-sigma test)
    draws = [_update(mod(_message(), _context(), _trained)) for _ in range(50)]
    assert np.mean(draws) == pytest.approx(1.0 / np.sqrt(20), abs=0.6)  # the clipped update
    assert 3.6 < np.std(draws) < 4.4
    metrics = reply.content["metrics"]
    expected = PrivacyLedger(delta=1e-5, gaussian=[(2.0, 1.0, 1)]).epsilon()
    assert metrics[EPSILON_KEY] == pytest.approx(expected)
    assert metrics[DELTA_KEY] == 1e-5 and metrics["num-examples"] == 10
    assert ledger_of(ctx, DpSettings(mode="local", delta=1e-5)).rounds == 1


def test_explicit_mod_spends_its_budget_over_the_rounds_then_declines() -> None:
    # Prepare: Laplace, epsilon 3 over 3 rounds: 1.0 a round (basic composition)
    mod = make_local_dp_mod(epsilon=3.0, delta=1e-5, clip=0.1, rounds=3, mechanism="laplace")
    ctx = _context()
    # Execute: one round more than planned
    replies = [mod(_message(r), ctx, _trained) for r in range(1, 5)]
    # Assert
    assert [r.has_error() for r in replies] == [False, False, False, True]
    eps = [r.content["metrics"][EPSILON_KEY] for r in replies[:3]]
    assert eps == pytest.approx([1.0, 2.0, 3.0])
    assert np.abs(_update(replies[0])).mean() > 0.1  # Laplace scale 2 * 0.1 / 1.0 per coordinate
    assert replies[-1].error.code == BUDGET_EXHAUSTED
    assert "privacy budget exhausted" in replies[-1].error.reason
    assert "budget epsilon = 3" in replies[-1].error.reason


def test_planned_gaussian_noise_reaches_the_budget_only_after_the_planned_rounds() -> None:
    mod = make_local_dp_mod(epsilon=8.0, delta=1e-5, clip=1.0, rounds=2)
    ctx = _context()
    replies = [mod(_message(r), ctx, _trained) for r in (1, 2, 3)]
    first, second = (r.content["metrics"][EPSILON_KEY] for r in replies[:2])
    assert 0 < first < second <= 8.0 and second == pytest.approx(8.0, rel=0.01)
    assert replies[2].has_error() and replies[2].error.code == BUDGET_EXHAUSTED


def test_two_clients_draw_different_secret_noise() -> None:
    mod = make_local_dp_mod(epsilon=3.0, delta=1e-5, clip=0.1, rounds=3, mechanism="laplace")
    a, b = (mod(_message(), _context(), _trained) for _ in range(2))  # same node id, same round
    assert not np.allclose(_update(a), _update(b))


def test_bad_explicit_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="DpSettings.local_mechanism = 'uniform'"):
        make_local_dp_mod(epsilon=3.0, delta=1e-5, clip=1.0, rounds=3, mechanism="uniform")
    with pytest.raises(ValueError, match="DpSettings.rounds = 0"):
        make_local_dp_mod(epsilon=3.0, delta=1e-5, clip=1.0, rounds=0)


def test_record_driven_mod_follows_the_servers_record() -> None:
    dp = DpSettings(mode="local", epsilon=3.0, rounds=3, local_mechanism="laplace", l1_clip=0.1)
    ctx = _context()
    reply = local_dp_mod(_message(dp=dp), ctx, _trained)
    assert reply.content["metrics"][EPSILON_KEY] == pytest.approx(1.0)
    assert ledger_of(ctx, dp).rounds == 1


def test_record_driven_mod_without_the_record_names_itself_and_the_fix() -> None:
    reply = local_dp_mod(_message(), _context(), _trained)
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert reply.error.reason.startswith("local_dp_mod: the train message has no 'flwr-privacy.dp'")
    assert "BudgetGuard(strategy, dp=DpSettings(mode='local'" in reply.error.reason
    assert "make_local_dp_mod(epsilon=" in reply.error.reason


def test_record_driven_mod_refuses_an_inconsistent_record() -> None:
    msg = _message(dp=DpSettings(mode="local"))
    msg.content[DP_RECORD]["epsilon"] = -2.0
    reply = local_dp_mod(msg, _context(), _trained)
    assert reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "is inconsistent: DpSettings.epsilon = -2.0" in reply.error.reason


@pytest.mark.parametrize(("kind", "dp"), [
    ("evaluate", None),  # not a train message: no record needed
    ("train", DpSettings(mode="dp-sgd")),  # another DP mode: not this mod's job
    ("train", DpSettings()),  # DP off
])  # fmt: skip
def test_other_messages_and_modes_pass_through_untouched(kind: str, dp: DpSettings | None) -> None:
    ctx = _context()
    reply = local_dp_mod(_message(kind=kind, dp=dp), ctx, _trained)
    assert np.allclose(_update(reply), 3.0) and EPSILON_KEY not in reply.content["metrics"]
    assert len(ctx.state) == 0  # no ledger opened


def test_an_error_reply_passes_through_and_spends_nothing() -> None:
    mod = make_local_dp_mod(epsilon=3.0, delta=1e-5, clip=1.0, rounds=3, mechanism="laplace")
    ctx = _context()

    def failing(msg: Message, ctx: Context) -> Message:
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="boom"),
                       reply_to=msg)  # fmt: skip

    reply = mod(_message(), ctx, failing)
    assert reply.error.reason == "boom"
    assert ledger_of(ctx, DpSettings(mode="local")).rounds == 0
