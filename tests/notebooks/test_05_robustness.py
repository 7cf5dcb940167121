"""notebooks/05_robustness.ipynb, top to bottom with small parameters (notebook_run.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.notebooks.notebook_run import execute

pytestmark = pytest.mark.slow(seconds=90)  # a notebook kernel: tests/conftest.py


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
