"""Every notebook runs top to bottom (papermill, a real kernel) with small parameters.

The parameters cell of each notebook holds the full experiment; these runs
override it with few rounds, few clients and small data so the suite stays
fast, and check the files each notebook promises to write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def execute(name: str, tmp_path: Path, **params: Any) -> Path:
    """Run ``notebooks/<name>.ipynb`` from the repository root; return its output folder."""
    out = tmp_path / "out"
    papermill.execute_notebook(
        NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
        parameters=params | {"OUT_DIR": str(out)}, cwd=str(ROOT), kernel_name="python3",
        progress_bar=False,
    )  # fmt: skip
    return out


def test_medical_he(tmp_path: Path) -> None:
    out = execute(
        "01_medical_he", tmp_path, CLIENTS=3, ROUNDS=2, ROUND_MARKS=[1, 2], BATCH_SIZES=[16],
        LEARNING_RATES=[0.1], GRID_BASE={"batch-size": 16, "learning-rate": 0.1},
        STRATEGIES=["fedavg"], PARTITIONERS=["iid"],
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    # 4 exchanges; the grid base and the strategy table reuse them (same resolved config)
    assert len(summary["runs"]) == 4
    assert all(0.5 < r["test"]["accuracy"] <= 1 for r in summary["runs"])
    # every run is tested on the held-out set (server-blind ones decrypted by the key holder),
    # never on the clients' validation splits, whose metrics have no ROC-AUC
    assert all("roc-auc" in r["test"] for r in summary["runs"])
    grid = pd.read_csv(out / "grid.csv")
    assert list(grid["factor"]) == ["rounds", "rounds", "batch size", "learning rate"]
    table = pd.read_csv(out / "strategies.csv")
    assert set(table["exchange"]) == {"plaintext", "server-blind CKKS"}
    for png in ("accuracy_per_round.png", "grid.png"):
        assert (out / png).stat().st_size > 1000


def test_threat_detection(tmp_path: Path) -> None:
    best = "DNN + HE (CKKS) + box plot"
    out = execute(
        "02_threat_detection", tmp_path, DATASETS={"synthetic": ""}, ROUNDS=1, CLIENTS=4,
        SETTINGS=[best], PARTITIONERS=["iid"], FRACTION=0.25,
    )  # fmt: skip
    ablation = pd.read_csv(out / "ablation_synthetic.csv")
    assert list(ablation["setting"]) == [best]
    assert {"f1", "f1-noise-0.5", "f1-sign-flip-0.25"} <= set(ablation.columns)
    per_class = pd.read_csv(out / "per_class_synthetic.csv", index_col=0)
    assert len(per_class) == 7 and per_class["precision"].between(0, 1).all()
    compare = pd.read_csv(out / "compare_synthetic.csv")
    assert len(compare) == 3  # centralized, flat, hierarchical
    assert compare["latency-ms-batch1"].gt(0).all()


def test_privacy_utility(tmp_path: Path) -> None:
    out = execute(
        "03_privacy_utility", tmp_path, DATASETS={"generated-gray": ""}, EPSILONS=[8],
        NO_DP=False, ROUNDS=2, CLIENTS=3, BATCH_SIZE=64, SCHEDULE_SHARES=[0.5],
    )  # fmt: skip
    sweep = pd.read_csv(out / "sweep.csv")
    assert list(sweep["mechanism"]) == ["dp-sgd", "laplace-sgd"]
    # ledger epsilons, never above the target (Laplace: basic composition spends it exactly)
    assert (sweep["epsilon"] <= 8 + 1e-6).all() and (sweep["epsilon"] > 4).all()
    schedule = pd.read_csv(out / "schedule.csv")
    assert schedule["laplace-increment"].tolist() == pytest.approx([0.5 * 2 * 8 / 2])
    assert schedule["epsilon"].tolist() == pytest.approx([8.0])
    assert (out / "ledger_per_round.png").stat().st_size > 1000


def test_cost_of_protection(tmp_path: Path) -> None:
    out = execute(
        "04_cost_of_protection", tmp_path, CLIENT_COUNTS=[3], ROUNDS=1, SIZE=2000,
        TASK={"task": "breast-cancer"},
    )  # fmt: skip
    cost = pd.read_csv(out / "cost_per_round.csv")
    assert len(cost) == 3
    by = cost.set_index(["setting", "clients"])
    # encryption costs bytes on the way up, and the server aggregates ciphertexts
    up = by["bytes-up-per-round"]
    assert up[("CKKS", 3)] > 10 * up[("plaintext", 3)]
    assert by.loc[("packed Paillier", 3), "server-aggregate-s"] > 0
    assert by.loc[("plaintext", 3), "client-encrypt-s"] == 0
    micro = pd.read_csv(out / "he_layer.csv")
    assert set(micro["clients"]) == {3} and micro["aggregate-s"].ge(0).all()
    assert (out / "round_split.png").stat().st_size > 1000


def test_robustness(tmp_path: Path) -> None:
    out = execute(
        "05_robustness", tmp_path, ROUNDS=2, CLIENTS=5, STRATEGIES=["fedavg", "boxplot"],
        ATTACKS=["same-value"], FRACTIONS=[0.2], HEAT_FRACTION=0.2,
    )  # fmt: skip
    heat = pd.read_csv(out / "heatmap.csv", index_col=0)
    assert list(heat.index) == ["fedavg", "boxplot"]
    assert list(heat.columns) == ["clean", "same-value"]
    # one client sending a constant-10 vector wrecks FedAvg; the box plot drops it
    assert heat.loc["boxplot", "same-value"] > heat.loc["fedavg", "same-value"] + 0.05
    assert len(pd.read_csv(out / "robustness.csv")) == 4
    assert (out / "heatmap.png").stat().st_size > 1000


def test_what_protection_buys(tmp_path: Path) -> None:
    mnist = ROOT.parent / "shared" / "data" / "mnist"  # README "Data"; skipped when missing
    out = execute(
        "06_what_protection_buys", tmp_path, MNIST_DIR=str(mnist), INVERSION_TRIALS=1,
        INVERSION_ITERATIONS=50, INVERSION_PROTECTIONS=["plaintext", "he", "dp-sgd-eps3"],
        MEMBERSHIP_TASKS=["breast-cancer"], MEMBERSHIP_MODES=["dp-sgd"], MEMBERSHIP_ROUNDS=1,
        MEMBERSHIP_SHADOWS={"breast-cancer": 2}, AUDIT_RUNS=[["breast-cancer", "dp-sgd", 3.0, 1]],
        AUDIT_ROUNDS={"breast-cancer": 2}, AUDIT_CANARIES={"breast-cancer": 20}, AUDIT_CLIENTS=3,
        SYBIL_STRATEGIES=["foolsgold"], SYBIL_FRACTIONS=[0.4], SYBIL_ROUNDS=1, SYBIL_CLIENTS=5,
    )  # fmt: skip
    if (mnist / "train-images-idx3-ubyte.gz").is_file():
        psnr = pd.read_csv(out / "inversion.csv", index_col=0)["psnr-mean"]
        assert list(psnr.index) == ["plaintext", "he", "dp-sgd-eps3"]
        # the exact update gives the image back better than ciphertext bytes or DP noise
        assert psnr["plaintext"] > max(psnr["he"], psnr["dp-sgd-eps3"])
        assert (out / "inversion.png").stat().st_size > 1000
    else:
        assert not (out / "inversion.csv").exists()
    mem = pd.read_csv(out / "membership.csv")
    assert set(mem["target"]) == {"global", "client"} and set(mem["attack"]) == {"loss", "lira"}
    assert mem["auc"].between(0, 1).all() and (mem["epsilon-bound"] <= 3 + 1e-6).all()
    # a measured point above the DP bound at 95 % confidence would be a DP bug
    assert not mem["violated@0.01"].any() and not mem["violated@0.001"].any()
    assert (out / "membership_roc.png").stat().st_size > 1000
    audit = pd.read_csv(out / "dp_audit.csv")
    assert len(audit) == 1 and 0 < audit.loc[0, "ledger-epsilon"] <= 3 + 1e-6
    assert audit.loc[0, "empirical-epsilon"] <= audit.loc[0, "ledger-epsilon"]
    assert not audit["above-ledger"].any()
    sybils = pd.read_csv(out / "sybils.csv")
    assert list(sybils["strategy"]) == ["foolsgold"] and list(sybils["fraction"]) == [0.4]
    assert sybils["source-recall"].between(0, 1).all()
    for png in ("dp_audit.png", "sybils.png"):
        assert (out / png).stat().st_size > 1000
