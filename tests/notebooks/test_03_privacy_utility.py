"""notebooks/03_privacy_utility.ipynb, top to bottom with small parameters (notebook_run.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.notebooks.notebook_run import execute

pytestmark = pytest.mark.slow(seconds=90)  # a notebook kernel: tests/conftest.py


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
