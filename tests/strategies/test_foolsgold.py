"""FoolsGold: sybil weights on constructed histories, aggregation, and the refusals."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvg

from app.config import AppConfig, ConfigError
from app.simulation import resolve_run_config, simulate
from flwr_privacy.settings import HeSettings
from flwr_privacy.strategy.box_plot import FilterReport
from flwr_privacy.strategy.foolsgold import (
    FoolsGold,
    FoolsGoldFedAvg,
    FoolsGoldFilter,
    foolsgold_weights,
)
from strategies import Robustness, make_strategy
from tests.strategies.conftest import Replies

D = 200


def _honest(rng: np.random.Generator, n: int, shared: float = 0.5) -> np.ndarray:
    """Diverse honest updates: a shared learning signal plus each client's own direction."""
    return shared * rng.normal(size=D) + rng.normal(size=(n, D))


def test_identical_sybils_get_zero_and_diverse_honest_keep_weight() -> None:
    # Prepare: seven honest clients, three sybils sending one poisoned direction.
    rng = np.random.default_rng(0)
    poisoned = rng.normal(size=D)
    sybils = poisoned + 1e-3 * rng.normal(size=(3, D))
    # Execute
    weights, similarity = foolsgold_weights(np.vstack([_honest(rng, 7), sybils]))
    # Assert
    assert weights[7:] == pytest.approx(0.0, abs=1e-6)
    assert np.all(weights[:7] > 0.5)
    assert np.all(similarity[7:] > 0.999) and np.all(similarity[:7] < 0.6)


def test_no_attacker_no_honest_client_is_zeroed() -> None:
    for seed in range(20):  # many constructed diverse federations, none loses a client
        rng = np.random.default_rng(seed)
        weights, _ = foolsgold_weights(_honest(rng, 10))
        assert np.all(weights > 0.5), (seed, weights)


def test_degenerate_federations() -> None:
    assert foolsgold_weights(np.ones((1, 4)))[0] == pytest.approx([1.0])  # alone: not a sybil
    assert foolsgold_weights(np.ones((3, 4)))[0] == pytest.approx([0.0] * 3)  # all twins
    two = foolsgold_weights(np.array([[1.0, 0.0], [1.0, 0.1]]))[0]
    assert two == pytest.approx([1.0, 1.0])  # two clients: nothing tells them apart
    with pytest.raises(ValueError, match="kappa"):
        FoolsGold(kappa=0.0)


def test_pardoning_spares_an_honest_client_that_resembles_a_sybil() -> None:
    # Sybils 0 and 1 are near twins; honest client 2 leans towards them (cos ~0.7).
    rng = np.random.default_rng(3)
    poisoned = rng.normal(size=D)
    sybils = poisoned + 0.01 * rng.normal(size=(2, D))
    leaning = poisoned + rng.normal(size=D)
    weights, similarity = foolsgold_weights(np.vstack([sybils, leaning, _honest(rng, 5)]))
    # Unpardoned, alpha = 1 - 0.7 would be below 0.38 of the honest ones' and weigh 0.
    assert similarity[2] > 0.6
    assert weights[2] > 0.5 and np.all(weights[:2] == 0.0)


def _keep(reports: list[FilterReport]):
    return lambda server_round, report: reports.append(report)


def _fedavg(reports: list[FilterReport]) -> FoolsGoldFedAvg:
    strategy = FoolsGoldFedAvg(on_filter=_keep(reports))
    strategy._sent = ArrayRecord(
        {"w": Array(np.zeros(D, np.float32))}
    )  # what configure_train keeps
    return strategy


def test_aggregate_equals_weighted_fedavg_when_all_weights_are_one(make_replies: Replies) -> None:
    rng = np.random.default_rng(1)
    updates, sizes = _honest(rng, 8), list(range(10, 18))
    reports: list[FilterReport] = []
    arrays, metrics = _fedavg(reports).aggregate_train(1, make_replies(updates, sizes))
    expected, _ = FedAvg().aggregate_train(1, make_replies(updates, sizes))
    assert set(reports[0].as_dict()["weights"].values()) == {1.0}
    assert arrays["w"].numpy() == pytest.approx(expected["w"].numpy(), abs=1e-5)
    assert metrics is not None and metrics["loss"] == pytest.approx(
        np.average(range(1, 9), weights=sizes)
    )


def test_sybils_are_left_out_of_the_mean(make_replies: Replies) -> None:
    rng = np.random.default_rng(2)
    honest = _honest(rng, 6)
    updates = np.vstack([honest, np.tile(10 * rng.normal(size=D), (3, 1))])
    sizes = [20] * 9
    reports: list[FilterReport] = []
    arrays, _ = _fedavg(reports).aggregate_train(1, make_replies(updates, sizes))
    assert arrays["w"].numpy() == pytest.approx(honest.mean(axis=0), abs=1e-5)
    assert set(reports[0].dropped) == {7, 8, 9}
    assert "history cosine similarity" in reports[0].dropped[7]


def test_history_catches_a_sybil_that_looked_honest_in_round_one(make_replies: Replies) -> None:
    # Honest clients keep their own direction (their data); three sybils add the poisoned
    # direction under noise so large that one round's updates look unrelated (cos ~0.1).
    rng = np.random.default_rng(4)
    own, poisoned = rng.normal(size=(7, D)), rng.normal(size=D)
    reports: list[FilterReport] = []
    strategy = _fedavg(reports)
    for server_round in range(1, 21):
        honest = own + rng.normal(size=(7, D))
        sybils = poisoned + 3.0 * rng.normal(size=(3, D))
        strategy.aggregate_train(server_round, make_replies(np.vstack([honest, sybils]), [20] * 10))
    first, last = (
        np.array(list(r.as_dict()["weights"].values())) for r in (reports[0], reports[-1])
    )
    assert np.all(first[7:] > 0.5)  # round 1: the sybils pass as honest
    assert np.all(last[7:] == 0.0) and np.all(last[:7] > 0.5)  # round 20: histories give them away
    caught = next(i for i, r in enumerate(reports, 1) if set(r.dropped) == {8, 9, 10})
    assert caught < 20


def test_features_restrict_the_comparison_to_named_arrays(make_replies: Replies) -> None:
    # Sybils agree on the output layer only; elsewhere they look like anybody.
    rng = np.random.default_rng(5)
    out = np.vstack([rng.normal(size=(6, 10)), np.tile(rng.normal(size=10), (3, 1))])
    body = rng.normal(size=(9, D))
    records = [
        ArrayRecord({"body": Array(b.astype(np.float32)), "out": Array(o.astype(np.float32))})
        for b, o in zip(body, out, strict=True)
    ]
    sent = ArrayRecord(
        {"body": Array(np.zeros(D, np.float32)), "out": Array(np.zeros(10, np.float32))}
    )
    for features, sybils_caught in (((), False), (("out",), True)):
        reports: list[FilterReport] = []
        strategy = FoolsGoldFedAvg(foolsgold=FoolsGold(features=features), on_filter=_keep(reports))
        strategy._sent = sent
        strategy.aggregate_train(1, make_replies(records, [10] * 9))
        assert (set(reports[0].dropped) == {7, 8, 9}) is sybils_caught
    strategy = FoolsGoldFedAvg(foolsgold=FoolsGold(features=("head",)))
    strategy._sent = sent
    with pytest.raises(ValueError, match="head"):
        strategy.aggregate_train(1, make_replies(records, [10] * 9))


def test_refused_with_homomorphic_encryption() -> None:
    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_nodes=2, num_nodes=10)
    robust = Robustness(foolsgold=FoolsGold())
    assert isinstance(make_strategy("fedavg", robust=robust, **common), FoolsGoldFilter)
    with pytest.raises(ValueError, match="plaintext update histories.*he.backend = 'none'"):
        make_strategy("fedavg", robust=robust, he=HeSettings(backend="ckks"), **common)
    with pytest.raises(ValueError, match="hierarchy.edges = 0"):
        make_strategy("fedavg", robust=robust, edges={1: 0, 2: 0}, **common)

    class Blind(FedAvg):
        server_blind = True  # what the encrypted strategies declare

    with pytest.raises(ValueError, match="server-blind"):
        FoolsGoldFilter(Blind())
    for backend in ("ckks", "paillier"):
        cfg = resolve_run_config({"robust.filter": "foolsgold", "he.backend": backend})
        with pytest.raises(ConfigError, match="'foolsgold' compares plaintext update histories"):
            AppConfig.from_run_config(cfg)
    for overrides, why in (
        ({"hierarchy.edges": 2}, "hierarchy.edges = 2 hides"),
        ({"strategy": "krum"}, "composes with fedavg or fedprox only"),
        ({"dp.mode": "central"}, "without robust.filter"),
    ):
        with pytest.raises(ConfigError, match=why):
            AppConfig.from_run_config(
                resolve_run_config({"robust.filter": "foolsgold"} | overrides)
            )
    cfg = AppConfig.from_run_config(
        resolve_run_config({"robust.filter": "foolsgold", "robust.foolsgold-kappa": 2.0})
    )
    assert cfg.robust.robustness(encrypted=False).foolsgold == FoolsGold(kappa=2.0)


@pytest.mark.slow
def test_identical_sybils_weigh_less_than_honest_clients_in_a_real_run(tmp_path: Path) -> None:
    """Two of six clients send one identical update (``same-value``): FoolsGold zeroes them.

    Relabelling sybils (``label-flip-target``) are not caught on this task: IID
    honest updates of the 31-weight model are more alike (cosine ~0.96) than the
    sybils' (~0.9), which FoolsGold does not assume (docs/guides/robust.md: "FoolsGold").
    """
    results = simulate(
        {"num-server-rounds": 3, "output-dir": str(tmp_path), "robust.filter": "foolsgold",
         "attack.type": "same-value", "attack.value": 0.1, "attack.fraction": 0.34,
         "fraction-evaluate": 0.0},
        num_supernodes=6,
    )  # fmt: skip
    assert results["status"] == "completed"
    sybils = {str(n) for n in results["attack"]["malicious-nodes"]}
    assert len(sybils) == 2
    for entry in results["rounds"]:
        weights = entry["robust"]["weights"]
        honest = [w for n, w in weights.items() if n not in sybils]
        assert max(weights[n] for n in sybils) == 0.0 < min(honest)
        assert set(entry["robust"]["dropped"]) == sybils
    assert results["final"]["accuracy"] >= 0.9
