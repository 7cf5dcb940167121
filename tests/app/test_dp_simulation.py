"""DP end to end through Flower's simulation engine: ledgers, budgets, central DP, DP + HE."""

import json
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from app.config import ConfigError
from app.simulation import simulate
from tests.clients import clients_with

pytestmark = pytest.mark.slow  # real processes or the engine: tests/conftest.py

BASE = {"num-server-rounds": 3, "local-epochs": 1, "fraction-evaluate": 0.0, "batch-size": 32}


def _run(tmp_path: Path, **overrides: object) -> dict:
    return simulate(BASE | {"output-dir": str(tmp_path)} | overrides, num_supernodes=4)


def test_dp_sgd_ledgers_match_opacus_over_the_whole_schedule(tmp_path: Path) -> None:
    # Execute: 3 rounds of DP-SGD, noise planned for epsilon 3 over the 3 rounds
    results = _run(tmp_path, **{"dp.mode": "dp-sgd", "dp.epsilon": 3.0})
    # Assert: every client's reported epsilon is Opacus' RDP epsilon of the steps it ran
    assert results["status"] == "completed"
    accountants = {str(p): RDPAccountant() for p in range(4)}
    for r in results["rounds"]:
        privacy = r["privacy"]
        assert set(privacy["epsilon"]) == set(accountants)
        for client, release in privacy["releases"].items():
            for _ in range(int(release["dp-steps"])):
                accountants[client].step(noise_multiplier=release["dp-noise-multiplier"],
                                         sample_rate=release["dp-sample-rate"])  # fmt: skip
            expected = accountants[client].get_epsilon(delta=1e-5)
            assert privacy["epsilon"][client] == pytest.approx(expected, rel=1e-3)
        assert "dp-epsilon" not in r["train"] and "train-loss" not in r["train"]
    assert 2.9 <= results["privacy"]["epsilon-max"] <= 3.0  # the whole budget, not more
    assert results["final"]["accuracy"] >= 0.85  # WDBC learns under DP (chance: 0.63)
    assert (Path(results["path"]).parent / "metrics.png").exists()


def test_clients_at_their_budget_decline_and_the_run_ends_cleanly(tmp_path: Path) -> None:
    # Prepare: a fixed noise that spends about 1.9 per round against a budget of 4.5
    overrides = {"dp.mode": "dp-sgd", "dp.noise-multiplier": 1.5, "dp.epsilon": 4.5,
                 "batch-size": 90, "num-server-rounds": 6}  # fmt: skip
    # Execute
    results = _run(tmp_path, **overrides)
    # Assert: rounds before the budget ran out are kept, then every client declined
    assert results["status"] == "stopped"
    assert "exhausted their privacy budget" in results["stopped"]
    trained = [r for r in results["rounds"] if r["privacy"].get("epsilon")]
    assert 1 <= len(trained) < 6
    assert results["privacy"]["epsilon-max"] <= 4.5
    declined = results["privacy"]["declined"]
    assert len({d["node-id"] for d in declined}) == 4
    assert all("privacy budget exhausted" in d["reason"] for d in declined)
    on_disk = json.loads(Path(results["path"]).read_text())
    assert on_disk["status"] == "stopped" and len(on_disk["rounds"]) == len(results["rounds"])


def test_central_dp_noises_the_aggregate_and_accounts_it_on_the_server(tmp_path: Path) -> None:
    results = _run(tmp_path, **{"dp.mode": "central", "dp.noise-multiplier": 1.0})
    eps = [r["privacy"]["epsilon-max"] for r in results["rounds"]]
    reference = RDPAccountant()
    expected = []
    for _ in eps:
        reference.step(noise_multiplier=1.0, sample_rate=1.0)
        expected.append(reference.get_epsilon(delta=1e-5))
    assert eps == pytest.approx(expected, rel=1e-3)
    assert results["rounds"][0]["train"]["num-replies"] == 4


def test_dp_and_he_compose_through_flower(tmp_path: Path) -> None:
    # Noise is added on the client before the HE mod encrypts the update.
    results = _run(tmp_path, **{"dp.mode": "dp-sgd", "dp.epsilon": 8.0, "he.backend": "ckks",
                                "num-server-rounds": 2})  # fmt: skip
    assert results["status"] == "completed"
    assert (Path(results["path"]).parent / "global-model.he.json").exists()
    assert all(len(r["privacy"]["epsilon"]) == 4 for r in results["rounds"])
    assert results["privacy"]["epsilon-max"] <= 8.0


def test_delta_above_one_over_n_stops_the_run_before_round_one(tmp_path: Path) -> None:
    # 10 breast-cancer clients hold about 36 training examples each: delta 0.05 > 1/36
    with pytest.raises(ConfigError, match="smallest client holds 36 examples"):
        simulate(BASE | {"output-dir": str(tmp_path), "dp.mode": "dp-sgd", "dp.delta": 0.05},
                 num_supernodes=10)  # fmt: skip
    (results,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/results.json")]
    assert results["status"] == "failed" and results["rounds"] == []
    assert "'dp.delta' = 0.05 is invalid: the smallest client holds" in results["error"]


def _crash_partition_0_in_round_2(msg, context, call_next):  # noqa: ANN001, ANN202
    if context.node_config["partition-id"] == 0 and msg.content["config"]["server-round"] == 2:
        raise RuntimeError("client 0 crashed")
    return call_next(msg, context)


def test_distributed_dp_accounts_the_sum_and_skips_a_round_short_of_shares(tmp_path: Path) -> None:
    # Prepare: noise split over 4 shares under CKKS; client 0 crashes in round 2
    clients = clients_with(_crash_partition_0_in_round_2)
    overrides = {"dp.mode": "distributed", "he.backend": "ckks", "min-clients": 4,
                 "dp.noise-multiplier": 2.0, "dp.momentum": 0.5, "learning-rate": 0.5}  # fmt: skip
    # Execute
    results = simulate(BASE | {"output-dir": str(tmp_path)} | overrides, num_supernodes=4,
                       clients=clients)  # fmt: skip
    # Assert: one noisy step a round, accounted at the noise of the whole sum
    assert results["status"] == "completed"
    r1, r2, r3 = results["rounds"]
    for r in (r1, r3):
        for release in r["privacy"]["releases"].values():
            assert release["dp-steps"] == 1 and release["dp-noise-multiplier"] == 2.0
        assert r["train"]["he-weight"] == 1.0  # uniform averaging: every share counts the same
    reference = RDPAccountant()
    q = r1["privacy"]["releases"]["1"]["dp-sample-rate"]
    reference.step(noise_multiplier=2.0, sample_rate=q)
    assert r1["privacy"]["epsilon"]["1"] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-3)
    alone = RDPAccountant()
    alone.step(noise_multiplier=1.0, sample_rate=q)  # one share: 2 / sqrt(4)
    assert r1["train"]["dp-epsilon-alone"] == pytest.approx(alone.get_epsilon(1e-5), rel=1e-3)
    # Assert: round 2 held 3 shares, fewer than 4: not aggregated, nothing released
    assert r2["train"] is None and len(r2["failures"]) == 1
    assert 0 < r3["train"]["dp-momentum-applied"] < 1.0  # only clients that saw round 2
