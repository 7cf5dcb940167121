"""Run an example app or one of its variants through Flower's simulation engine, once each.

Each run is its own process (``run_example.py``) started in an empty working directory
with only the app's directory first on ``sys.path``, so the example's own ``app``
package is the one imported, not this repository's.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("run_example.py")


def _variants_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_variants", ROOT / "examples/variants.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


variants = _variants_module()


class Runs:
    """``runs(variant, nodes)``: the final model and metrics of ``app_dir`` + a variant.

    ``"none"`` is the plain app. A (variant, nodes) pair runs once; later calls reuse it.
    """

    def __init__(self, app_dir: Path, base: Path, *, rounds: int, nodes: int) -> None:
        self.app_dir, self.base, self.rounds, self.nodes = app_dir, base, rounds, nodes
        self.done: dict[tuple[str, int], dict[str, Any]] = {}

    def __call__(self, variant: str, nodes: int | None = None) -> dict[str, Any]:
        nodes = nodes or self.nodes
        if (variant, nodes) in self.done:
            return self.done[variant, nodes]
        app = self.base / f"app-{variant}"
        if not app.exists() and variant == "none":  # a copy too, as the variants are: no
            shutil.copytree(self.app_dir, app, ignore=variants._SKIP)  # stale outputs or caches
        elif not app.exists():
            variants.apply(variant, app, self.app_dir)
        out, cwd = self.base / f"out-{variant}-{nodes}", self.base / f"cwd-{variant}-{nodes}"
        cwd.mkdir()
        overrides = json.dumps({"num-server-rounds": self.rounds, "output-dir": str(out)})
        cmd = [sys.executable, str(RUNNER), str(app), str(nodes), overrides]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{variant}: exit {proc.returncode}\n{log[-4000:]}"
        sampled = [int(n) for n in re.findall(r"configure_train: Sampled (\d+) nodes", log)]
        # (SecAgg+ samples once more, for its key set-up)
        assert len(sampled) >= self.rounds and set(sampled) == {nodes}, \
            f"{variant}: rounds sampled {sampled} nodes, not {nodes} each\n{log[-4000:]}"
        assert (out / "final_model.npz").exists(), f"{variant}: no final model\n{log[-4000:]}"
        with np.load(out / "final_model.npz") as npz:
            model = {k: npz[k] for k in npz.files}
        metrics = json.loads((out / "metrics.json").read_text())
        empty = [(k, r) for k in ("train", "evaluate") for r in range(1, self.rounds + 1)
                 if not metrics[k].get(str(r))]  # fmt: skip
        assert not empty, f"{variant}: no client metrics in {empty}\n{log[-4000:]}"
        self.done[variant, nodes] = {"model": model, "metrics": metrics, "log": log}
        return self.done[variant, nodes]


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest absolute difference between two models with the same arrays."""
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def round_metrics(result: dict[str, Any], kind: str, server_round: int) -> dict[str, float]:
    return result["metrics"][kind].get(str(server_round), {})


def added_lines(app_dir: Path) -> dict[str, int]:
    """Variant -> the lines its patch adds."""
    return {
        name: sum(added for added, _ in variants.count(patch).values())
        for name, patch in variants.patches(app_dir).items()
    }
