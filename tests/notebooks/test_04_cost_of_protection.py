"""notebooks/04_cost_of_protection.ipynb, top to bottom with small parameters (notebook_run.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.notebooks.notebook_run import execute

pytestmark = pytest.mark.slow(seconds=90)  # a notebook kernel: tests/conftest.py


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
