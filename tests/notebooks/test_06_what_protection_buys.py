"""notebooks/06_what_protection_buys.ipynb, top to bottom with small parameters."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.notebooks.notebook_run import ROOT, execute

pytestmark = pytest.mark.slow(seconds=90)  # a notebook kernel: tests/conftest.py


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
