"""notebooks/02_threat_detection.ipynb, top to bottom with small parameters (notebook_run.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.notebooks.notebook_run import execute

pytestmark = pytest.mark.slow(seconds=90)  # a notebook kernel: tests/conftest.py


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
