"""End to end through Flower's simulation engine (real ServerApp, ClientApps, Ray)."""

import json
from pathlib import Path

import pytest

from app.simulation import simulate

ROUNDS = 4


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("fedavg")
    return simulate({"num-server-rounds": ROUNDS, "output-dir": str(out)}, num_supernodes=10)


@pytest.mark.smoke  # the fast tier's one real simulation-engine run (tests/conftest.py)
def test_fedavg_learns_and_records_every_round(fedavg_run: dict) -> None:
    results = fedavg_run
    assert results["status"] == "completed"
    assert [r["round"] for r in results["rounds"]] == list(range(1, ROUNDS + 1))
    assert results["final"]["accuracy"] >= 0.93
    assert results["final"]["roc-auc"] >= 0.98
    model_bytes = 31 * 4  # weights + bias (standardization stats travel in the config)
    for r in results["rounds"]:
        assert r["seconds"] > 0
        assert r["train"]["num-replies"] == 10 and r["evaluate"]["num-replies"] == 10
        # 10 train + 10 evaluate messages each carry the model out; 10 train replies carry it back
        assert r["bytes-down"] > 20 * model_bytes and r["bytes-up"] > 10 * model_bytes
        assert r["failures"] == []
    assert results["setup"]["messages-up"] == 10  # feature-moment replies
    run_dir = Path(results["path"]).parent
    assert (run_dir / "metrics.png").exists()
    assert (
        json.loads((run_dir / "results.json").read_text())["config"]["num-server-rounds"] == ROUNDS
    )


@pytest.mark.slow
def test_same_seed_gives_same_final_metrics(fedavg_run: dict, tmp_path: Path) -> None:
    # a cold engine (fresh Ray runtime and actors, as Flower runs) matches the warm one the
    # other simulations of this process reuse (app.simulation: simulate(warm=True))
    again = simulate({"num-server-rounds": ROUNDS, "output-dir": str(tmp_path)}, num_supernodes=10,
                     warm=False)  # fmt: skip
    for key, value in fedavg_run["final"].items():
        assert again["final"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_fedprox_on_dirichlet_skew_runs(tmp_path: Path) -> None:
    results = simulate(
        {
            "num-server-rounds": 3,
            "strategy": "fedprox",
            "proximal-mu": 0.1,
            "partitioner": "dirichlet",
            "dirichlet-alpha": 0.3,
            "output-dir": str(tmp_path),
        },
        num_supernodes=10,
    )
    assert results["status"] == "completed" and len(results["rounds"]) == 3
    assert results["final"]["accuracy"] >= 0.85
