"""Robust filtering over SecAgg+ group sums: fresh random groups, filtered group means,
suspicion across rounds; the real SecAggPlus against the real secagg_mod, in process."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from flwr_privacy import SecAggPlus, SecAggSettings, make_secagg_mod
from flwr_privacy.records import SECAGG_RECORD
from flwr_privacy.secagg.groups import (
    GroupFilter,
    Suspicion,
    binomial_tail,
    chunk_groups,
    filter_groups,
    random_groups,
)

pytestmark = pytest.mark.usefixtures("server_identity")

SIZE = 8
STEP = 2 * 4.0 / (2**16 - 1)  # one quantization step at the default clip 4, 16 bits


def delta(pid: int, attackers: Sequence[int]) -> np.ndarray:
    if pid in attackers:
        return np.full(SIZE, 3.5, np.float32)  # same-value attack, inside the clip
    return np.random.default_rng(pid).normal(0, 0.05, SIZE).astype(np.float32)


def weight(pid: int) -> int:
    return 10 + pid


class InProcessGrid:
    """Flower's Grid as SecAggPlus uses it: each message goes to that node's real ClientApp."""

    def __init__(self, n: int, attackers: Sequence[int] = (),
                 refuse: dict[str, list[int]] | None = None) -> None:  # fmt: skip
        self.refuse = refuse or {}
        self.contexts = {
            node: Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                          node_config={"partition-id": node - 100, "num-partitions": n})
            for node in range(100, 100 + n)
        }  # fmt: skip
        self.app = ClientApp(mods=[self._refuser, make_secagg_mod(simulated_trust=True)])

        @self.app.train()
        def train(msg: Message, context: Context) -> Message:
            pid = int(context.node_config["partition-id"])
            w = msg.content.array_records["arrays"]["w"].numpy()
            return Message(RecordDict({
                "arrays": ArrayRecord({"w": Array(w + delta(pid, attackers))}),
                "metrics": MetricRecord({"num-examples": weight(pid)}),
            }), reply_to=msg)  # fmt: skip

    def _refuser(self, msg: Message, context: Context, call_next: Any) -> Message:
        record = msg.content.config_records.get(SECAGG_RECORD)
        stage = record.get("stage") if record is not None else None
        pid = int(context.node_config["partition-id"])
        if stage is not None and pid in self.refuse.get(str(stage), []):
            from flwr.app import Error

            return Message(Error(code=1, reason=f"partition {pid} refuses {stage}"), reply_to=msg)
        return call_next(msg, context)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def deliver(self, msg: Message) -> Message:
        msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        return self.app(msg, self.contexts[msg.metadata.dst_node_id])

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:  # fmt: skip
        return [self.deliver(m) for m in messages]


def _rounds(strategy: SecAggPlus, grid: InProcessGrid, rounds: int) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    strategy.on_round = lambda r, report: reports.append(report)
    arrays = ArrayRecord({"w": Array(np.zeros(SIZE, np.float32))})
    for r in range(1, rounds + 1):
        messages = list(strategy.configure_train(r, arrays, ConfigRecord(), grid))
        replies = [grid.deliver(m) for m in messages]
        out, _ = strategy.aggregate_train(r, replies)
        assert out is not None, reports[-1]
        reports[-1]["model"] = out["w"].numpy().copy()
        arrays = out
    return reports


def _strategy(n: int, robust: GroupFilter) -> SecAggPlus:
    inner = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                   min_available_nodes=n)  # fmt: skip
    sizes = {100 + p: weight(p) for p in range(n)}  # known sizes: weighted from round 1
    return SecAggPlus(inner, secagg=SecAggSettings(trust="simulated"), robust=robust,
                      num_examples=sizes)  # fmt: skip


def test_random_groups_cover_every_node_once_never_below_size_and_are_fresh() -> None:
    nodes = list(range(100))
    draws = [random_groups(nodes, 5) for _ in range(3)]
    for groups in draws:
        assert sorted(n for g in groups for n in g) == nodes
        assert min(len(g) for g in groups) >= 5 and len(groups) == 20
    assert draws[0] != draws[1] != draws[2]  # 100! orders: equal draws would be a fixed seed
    merged = random_groups(list(range(13)), 5)  # a short last group joins the previous one
    assert sorted(map(len, merged)) == [5, 8]
    assert random_groups([1, 2, 3], 5) == []  # never a group below its size
    # a restart cuts the round's one draw again without the dropped nodes: no re-roll
    order = list(range(20))
    assert chunk_groups([n for n in order if n != 3], 5) == [
        [0, 1, 2, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 19]]


def test_filtered_aggregate_equals_plaintext_filtering_of_the_same_group_sums() -> None:
    # Arrange: 16 clients, groups of 4, one attacker (its group is one of four)
    n, attackers = 16, [3]
    grid = InProcessGrid(n, attackers)
    strategy = _strategy(n, GroupFilter(size=4, suspicion=False))
    # Act
    report = _rounds(strategy, grid, rounds=1)[0]
    # Assert: the server saw 4 group means; the box plot dropped the attacker's group
    robust = report["robust"]
    groups = {int(g): [m - 100 for m in members] for g, members in robust["groups"].items()}
    assert len(groups) == 4 and all(len(g) == 4 for g in groups.values())
    bad = next(g for g, members in groups.items() if 3 in members)
    assert list(robust["dropped"]) == [str(bad)]
    # the same filter over the plaintext group means gives the same model, within quantization
    order = sorted(groups)
    means = np.stack([
        np.average([delta(p, attackers) for p in groups[g]], axis=0,
                   weights=[weight(p) for p in groups[g]]) for g in order
    ])  # fmt: skip
    weights = np.array([sum(weight(p) for p in groups[g]) for g in order], dtype=float)
    expected, dropped = filter_groups(means, weights, np.zeros(SIZE), strategy.robust)
    assert [order[i] for i in dropped] == [bad]
    assert np.max(np.abs(report["model"] - expected)) < 2 * n * STEP
    # without the filter the attacker's group would have moved the model by ~3.5 / 16
    assert np.max(np.abs(report["model"])) < 0.1


def test_groups_are_fresh_each_round_and_a_group_that_fails_to_unmask_is_left_out() -> None:
    # fresh: 16 clients in groups of 4 have 2.6 million splits; three equal draws would be a seed
    reports = _rounds(_strategy(16, GroupFilter(size=4, suspicion=False)), InProcessGrid(16), 3)
    memberships = [sorted(map(tuple, r["robust"]["groups"].values())) for r in reports]
    assert len({tuple(m) for m in memberships}) == 3
    assert all(len(g) == 4 for m in memberships for g in m)
    # 8 clients, two groups; partitions 1-3 refuse to sign, so one group holds two or three of
    # them and misses its quorum (3 of 4): it is left out with the reason, the other is kept
    grid = InProcessGrid(8, refuse={"sign": [1, 2, 3]})
    (report,) = _rounds(_strategy(8, GroupFilter(size=4, suspicion=False)), grid, 1)
    assert len(report["robust"]["groups"]) == 1 and report["aggregated"]
    (why,) = report["not-aggregated"].values()
    assert "fewer than the quorum" in why


def test_an_attacker_whose_groups_are_always_dropped_is_excluded_and_left_out() -> None:
    # Arrange: 20 clients, groups of 4 (5 a round), one same-value attacker
    n, attackers = 20, [7]
    grid = InProcessGrid(n, attackers)
    robust = GroupFilter(size=4, method="boxplot", alpha=0.05, min_rounds=3, rounds=8)
    strategy = _strategy(n, robust)
    # Act
    reports = _rounds(strategy, grid, rounds=8)
    # Assert: excluded once its drops are improbable for an honest client, then never sampled
    excluded = {int(k): v for k, v in reports[-1]["robust"]["suspicion"]["excluded"].items()}
    assert excluded and list(excluded) == [107]
    # pooled drop rate ~ (1 + 19 * 3/19) / 20 = 0.2: 0.2^n < 0.05 / (20 * 8) from n = 5
    assert 4 <= excluded[107] <= 7
    after = reports[excluded[107]]  # the round after the exclusion
    assert after["sampled"] == n - 1
    assert all(107 not in m for m in after["robust"]["groups"].values())
    assert np.max(np.abs(reports[-1]["model"])) < 0.2  # the attack never got in


def test_suspicion_keeps_honest_clients_whose_groups_are_dropped_at_the_common_rate() -> None:
    rng = np.random.default_rng(0)
    suspicion = Suspicion(alpha=0.05, min_rounds=3, planned=20)
    nodes, attackers = list(range(100)), set(range(10))
    for r in range(1, 21):
        groups = random_groups(nodes, 5)
        dropped = {i for i, g in enumerate(groups) if attackers & set(g) or rng.random() < 0.1}
        suspicion.record(r, groups, dropped)
    excluded = set(suspicion.excluded)
    assert len(excluded & attackers) >= 9  # >= 90 % of attackers by round 20
    assert len(excluded - attackers) <= 4  # <= 5 % of the 90 honest clients


def test_binomial_tail_and_settings_refusals() -> None:
    assert binomial_tail(10, 0, 0.3) == 1.0
    assert binomial_tail(4, 4, 0.5) == pytest.approx(1 / 16)
    assert binomial_tail(20, 20, 0.59) == pytest.approx(0.59**20)
    with pytest.raises(ValueError, match="a group needs >= 2"):
        GroupFilter(size=1)
    with pytest.raises(ValueError, match="method"):
        GroupFilter(size=4, method="mean")
    with pytest.raises(ValueError, match="not both"):
        SecAggPlus(FedAvg(), secagg=SecAggSettings(), groups={1: 0}, robust=GroupFilter(size=4))


def test_distributed_dp_is_planned_per_group_and_every_released_group_holds_its_noise() -> None:
    from flwr_privacy import DistributedDp

    # Arrange: 12 clients, groups of 4 (t = 2: 3 honest shares each), distributed DP
    n = 12
    dp = DistributedDp(epsilon=3.0, delta=1e-5, rounds=2, l2_clip=0.01, sample_rate=0.1,
                       update_norm=1.0)  # fmt: skip
    inner = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                   min_available_nodes=n)  # fmt: skip
    strategy = SecAggPlus(inner, secagg=SecAggSettings(trust="simulated", dp=dp),
                          robust=GroupFilter(size=4, suspicion=False))  # fmt: skip
    # Act: every client's mod checks the plan against its own group's signed parameters
    (report,) = _rounds(strategy, InProcessGrid(n), rounds=1)
    # Assert: three group sums released, each planned for its 3 honest shares
    assert report["aggregated"] and len(report["robust"]["groups"]) == 3
    assert report["ddg"]["planned-honest"] == 3 and report["ddg"]["per-group"]
    # the model is the clean mean of the kept groups plus their clients' noise shares (unit
    # weights under DDG; the filter may drop a group whose noise stands out)
    robust = report["robust"]
    kept = [m for g, m in robust["groups"].items() if g not in robust["dropped"]]
    clients = [node - 100 for members in kept for node in members]
    clean = np.mean([np.mean([delta(p, []) for p in [c - 100 for c in m]], axis=0)
                     for m in kept], axis=0)  # fmt: skip
    per_client = report["ddg"]["sigma"] * report["ddg"]["gamma"]
    noise = report["model"] - clean
    assert 0 < np.max(np.abs(noise)) < 6 * per_client / np.sqrt(len(clients))


def test_mad_rule_drops_a_contaminated_minority_of_groups_the_box_plot_keeps() -> None:
    # 16 group means, 7 of them (44 %: past the box plot's quarter) shifted by an attacker
    rng = np.random.default_rng(3)
    means = rng.normal(0, 0.01, (16, 50))
    means[:7] += 0.5
    weights = np.ones(16)
    mean, dropped = filter_groups(means, weights, np.zeros(50), GroupFilter(size=4, method="mad"))
    assert set(dropped) == set(range(7))
    assert np.allclose(mean, means[7:].mean(axis=0))
    _, kept_all = filter_groups(means, weights, np.zeros(50),
                                GroupFilter(size=4, method="boxplot"))  # fmt: skip
    assert len(kept_all) < 7  # the box plot's fences sit among the shifted groups


def test_a_group_short_of_its_planned_noise_is_never_unmasked() -> None:
    from flwr_privacy import DistributedDp

    # 12 clients, groups of 4 planned for 3 honest shares each (t = 2); partition 5 drops after
    # sharing, so its group's 3 survivors hold only 2 honest shares
    n = 12
    dp = DistributedDp(epsilon=3.0, delta=1e-5, rounds=2, l2_clip=0.01, sample_rate=0.1,
                       update_norm=1.0)  # fmt: skip
    inner = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                   min_available_nodes=n)  # fmt: skip
    strategy = SecAggPlus(inner, secagg=SecAggSettings(trust="simulated", dp=dp),
                          robust=GroupFilter(size=4, suspicion=False))  # fmt: skip
    (report,) = _rounds(strategy, InProcessGrid(n, refuse={"mask": [5]}), rounds=1)
    # its survivors refuse to sign a survivor set below |P| - max_dropouts (the client's own
    # check); the server's pre-unmask check ("not unmasked") backs it up
    (why,) = report["not-aggregated"].values()
    assert "fewer than the quorum" in why or "not unmasked" in why
    assert len(report["robust"]["groups"]) == 2  # the other two groups are released
    # the short group's survivors were never asked for a share: 8 unmask requests, not 11
    assert report["stages"]["unmask"]["messages"] == 8
