"""A user's own CSV through the real simulation: empty cells stop the run, imputation trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.final_model import test_final_model
from app.simulation import simulate
from data import synthetic_threats
from data.threat_csv import BadCellsError

pytestmark = pytest.mark.slow  # real processes or the engine: tests/conftest.py

BAD = {"inbound_bytes": 7, "cpu_load": 3}  # empty cells per column in the training file


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic threat records as a user's CSV: a heavy-tailed counter, text, empty cells."""
    root = tmp_path_factory.mktemp("logs")
    for name, n, seed in (("train.csv", 1600, 0), ("test.csv", 400, 1)):
        x, y = synthetic_threats.generate(n, seed=seed)
        frame = pd.DataFrame(x, columns=synthetic_threats.FEATURES).astype(object)
        frame["outbound_bytes"] = np.exp(3.0 * x[:, 1] + 10).round()  # up to ~1e9
        frame["proto"] = np.where(y % 2 == 0, "tcp", "udp")
        frame["class"] = np.array(synthetic_threats.CLASSES)[y]
        if name == "train.csv":
            for column, count in BAD.items():
                frame.loc[frame.index[5 : 5 + count], column] = ""
        frame.to_csv(root / name, index=False)
    return root


def run(logs: Path, out: Path, **overrides: object) -> dict:
    return simulate(
        {"task": "mcsn", "mcsn.dataset": "csv", "mcsn.data-dir": str(logs),
         "mcsn.label-column": "class", "num-server-rounds": 3, "local-epochs": 1,
         "batch-size": 32, "fraction-evaluate": 0.0, "output-dir": str(out), **overrides},
        num_supernodes=4,
    )  # fmt: skip


def test_empty_cells_stop_the_run_before_round_1_naming_each_column(
    logs: Path, tmp_path: Path
) -> None:
    with pytest.raises(BadCellsError, match="mcsn.missing"):
        run(logs, tmp_path)
    (results_file,) = tmp_path.glob("*/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "failed" and results["rounds"] == []
    assert "BadCellsError" in results["error"] and "train.csv" in results["error"]
    for column, count in BAD.items():
        assert f"'{column}': {count}" in results["error"]


@pytest.fixture(scope="module")
def imputed(logs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run(logs, tmp_path_factory.mktemp("imputed"), **{"mcsn.missing": "median"})


def test_median_imputation_trains_and_records_the_resolved_dataset(imputed: dict) -> None:
    results = imputed
    assert results["status"] == "completed" and len(results["rounds"]) == 3
    assert results["final"]["accuracy"] > 0.6 and np.isfinite(results["final"]["loss"])
    dataset = results["dataset"]
    assert dataset["source"] == "csv" and dataset["rows"] == {"train": 1600, "test": 400}
    assert dataset["features"] == 12 + 2 and dataset["log1p-columns"] == ["outbound_bytes"]
    assert {c: e["cells"] for c, e in dataset["imputed"].items()} == BAD
    assert list(dataset["classes"]) == sorted(synthetic_threats.CLASSES)
    assert sum(c["train"] for c in dataset["classes"].values()) == 1600
    assert results["config"]["mcsn.labels"] == "auto"


def test_the_final_model_tests_on_a_test_file_of_ones_own(
    logs: Path, imputed: dict, tmp_path: Path
) -> None:
    # Prepare: a plaintext CSV run, and a second test file (a slice of the first)
    results = imputed
    pd.read_csv(logs / "test.csv")[:100].to_csv(tmp_path / "mine.csv", index=False)
    # Execute: the run's own test file, then the user's one
    same = test_final_model(results["run-dir"])
    mine = test_final_model(
        results["run-dir"],
        overrides={"mcsn.data-dir": str(logs), "mcsn.test-file": str(tmp_path / "mine.csv")},
    )
    # Assert: the server's final metrics are reproduced; the user's file is what was scored
    assert same["accuracy"] == pytest.approx(results["final"]["accuracy"], abs=1e-6)
    assert sum(mine["confusion-matrix"]) == 100 and mine["accuracy"] > 0.5
