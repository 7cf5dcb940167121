"""SecAgg+ through Flower's real simulation engine: an outside-style app with ``secagg_mod``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.flwr_privacy.secagg_sim.run import SHAPES, delta

pytestmark = pytest.mark.slow  # real processes or the engine: tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]
STEP = 2 * 4.0 / (2**16 - 1)  # default clip 4, 16 bits: one quantization step


def _run(tmp_path: Path, **opts: Any) -> dict[str, Any]:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.flwr_privacy.secagg_sim.run", str(out), json.dumps(opts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (tmp_path / "stderr.txt").write_text(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _fedavg(partitions: list[int], rounds: int) -> dict[str, np.ndarray]:
    weights = [10 * (p + 1) for p in partitions]
    step = {
        k: np.average([delta(p)[k] for p in partitions], axis=0, weights=weights) for k in SHAPES
    }
    return {k: rounds * v for k, v in step.items()}


def _assert_close(report: dict[str, Any], expected: dict[str, np.ndarray], clients: int) -> None:
    for k in SHAPES:
        got = np.asarray(report["final"][k])
        assert np.max(np.abs(got - expected[k])) < 2 * clients * STEP  # within quantization


def test_secure_sum_equals_plaintext_fedavg_over_rounds(tmp_path: Path) -> None:
    report = _run(tmp_path, nodes=4, rounds=2)
    _assert_close(report, _fedavg([0, 1, 2, 3], rounds=2), clients=4)
    first = report["rounds"]["1"]
    assert first["aggregated"] and first["masked"] == 4 and first["recovered"] == []
    # round 1 asks each node its roster identity once; round 2 does not
    assert set(first["stages"]) == {"hello", "keys", "shares", "mask", "sign", "unmask"}
    assert all(s["messages"] == 4 and s["bytes-up"] > 0 for s in first["stages"].values())
    assert "hello" not in report["rounds"]["2"]["stages"]
    assert first["trust"] == "roster" and first["signed"] == 4


def test_dropouts_before_and_after_sharing_in_groups(tmp_path: Path) -> None:
    # partition 1 drops before sharing (left out), 2 after sharing (unmasked from its shares)
    report = _run(
        tmp_path,
        nodes=7,
        rounds=1,
        groups=1,
        neighbours=4,
        threshold=3,
        drop={"shares": [1], "mask": [2]},
    )
    _assert_close(report, _fedavg([0, 3, 4, 5, 6], rounds=1), clients=5)
    rnd = report["rounds"]["1"]
    assert (rnd["sampled"], rnd["shared"], rnd["masked"]) == (7, 6, 5)
    assert len(rnd["recovered"]) == 1 and rnd["aggregated"]
    assert rnd["restarts"] == 1  # its neighbours cannot mask with fewer than they shared with
    assert "drops at shares" in " ".join(rnd["stages"]["shares"]["failed"].values())


@pytest.mark.parametrize("groups", [2])
def test_too_few_survivors_leave_the_round_unaggregated_and_the_run_goes_on(
    tmp_path: Path, groups: int
) -> None:
    # group 0 (partitions 0, 2, 4, 6, 8) loses 2 of 5 after sharing with t = 4: its survivors
    # refuse to sign (too few surviving neighbours), so no quorum and nothing is revealed;
    # group 1 (1, 3, 5, 7) is aggregated: the cloud adds what the edges could unmask
    report = _run(tmp_path, nodes=9, rounds=1, groups=groups, threshold=1.0, drop={"mask": [0, 2]})
    rnd = report["rounds"]["1"]
    assert rnd["aggregated"] and rnd["groups"] == 2
    assert "fewer than the quorum" in rnd["not-aggregated"]["0"]
    assert "fewer than the threshold" in " ".join(rnd["stages"]["sign"]["failed"].values())
    _assert_close(report, _fedavg([1, 3, 5, 7], rounds=1), clients=4)
