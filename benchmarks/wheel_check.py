"""Install the toolkit from its built wheel, as a user gets it, and run examples there.

Usage: python -m benchmarks.wheel_check [--work DIR] [--rounds 2] [--dp] [--out FILE]

Builds the wheel and sdist (``python -m build``), then in one fresh virtual
environment: installs the wheel with the core only (its size is the core's); adds
the example's own scikit-learn and ``flwr[simulation]`` and runs
``examples/sklearn_logreg``'s ``secagg`` variant through ``flwr run``; adds the
``[he]`` extra and runs its ``ckks`` variant. ``--dp`` also adds ``[dp]`` (torch,
several GB) and runs the quickstart's ``dp-sgd`` variant. Each step reports its
install seconds and the venv's size (``du -sm``); every run must write a final
model and client metrics for every round. Writes JSON (default benchmarks/results/wheel_check.json).

Each ``flwr run`` uses a private ``FLWR_HOME`` and port, and the SuperLink it starts
is stopped by its PID afterwards (its command line names that ``FLWR_HOME``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app import superlink

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _sh(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 1800) -> tuple[float, str]:  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{log[-4000:]}")
    return time.perf_counter() - start, log


def _size_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])  # fmt: skip


def build(dist: Path) -> dict[str, Any]:
    """The wheel and sdist of this repository in ``dist``."""
    seconds, _ = _sh([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
    wheel = next(dist.glob("flower_privacy-*.whl"))
    sdist = next(dist.glob("flower_privacy-*.tar.gz"))
    return {"seconds": round(seconds, 1), "wheel": wheel.name, "sdist": sdist.name,
            "wheel-kb": wheel.stat().st_size // 1024}  # fmt: skip


def flwr_run(venv: Path, app: Path, out: Path, *, nodes: int, rounds: int) -> dict[str, Any]:
    """``flwr run`` of ``app`` in ``venv``'s environment; its final model and metrics."""
    home = Path(tempfile.mkdtemp(prefix="flwr-home-"))
    env = {**os.environ, "FLWR_HOME": str(home), "VIRTUAL_ENV": str(venv),
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    cwd = Path(tempfile.mkdtemp(prefix="flwr-cwd-"))  # not the repository root: see README
    cmd = [str(venv / "bin" / "flwr"), "run", str(app), "--stream",
           "--federation-config", f"num-supernodes={nodes}",
           "--run-config", f"num-server-rounds={rounds} output-dir='{out}'"]  # fmt: skip
    try:
        seconds, log = _sh(cmd, env=env, cwd=cwd, timeout=900)
    finally:
        superlink.stop(home=home)  # by PID, with its helpers; the one whose FLWR_HOME is ours
    model = out / "final_model.npz"
    if not model.exists():
        raise SystemExit(f"{app.name}: no final model in {out}\n{log[-4000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    missing = [r for r in range(1, rounds + 1) if not metrics["train"].get(str(r))]
    if missing:
        raise SystemExit(f"{app.name}: no train metrics in rounds {missing}\n{log[-4000:]}")
    return {"seconds": round(seconds, 1), "evaluate": metrics["evaluate"].get(str(rounds), {})}


def _variant(app: str, variant: str, dest: Path) -> Path:
    subprocess.run([sys.executable, str(EXAMPLES / "variants.py"), "--app", app, "apply",
                    variant, str(dest)], check=True, capture_output=True)  # fmt: skip
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (default: temp)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dp", action="store_true", help="also [dp] and the dp-sgd variant")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/wheel_check.json")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="wheel-check-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"build": build(work / "dist"), "steps": []}
    wheel = work / "dist" / report["build"]["wheel"]
    print(f"built {wheel.name} ({report['build']['wheel-kb']} KB) in "
          f"{report['build']['seconds']} s", flush=True)  # fmt: skip
    venv = work / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    _sh([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # (install step, requirements, the example run after it or None)
    steps: list[tuple[str, list[str], tuple[str, str, int] | None]] = [
        ("core", [f"flower-privacy @ {wheel.as_uri()}"], None),
        ("+ example deps", ["flwr[simulation]>=1.41,<1.43", "scikit-learn>=1.4"],
         ("sklearn_logreg", "secagg", 4)),  # fmt: skip
        ("+ [he]", [f"flower-privacy[he] @ {wheel.as_uri()}"], ("sklearn_logreg", "ckks", 4)),
    ]
    if args.dp:
        steps.append(("+ [dp]", [f"flower-privacy[he,dp] @ {wheel.as_uri()}"],
                      ("quickstart", "dp-sgd", 3)))  # fmt: skip
    for name, reqs, example in steps:
        seconds, _ = _sh([*pip, *reqs])
        step: dict[str, Any] = {"install": name, "install-seconds": round(seconds, 1),
                                "venv-mb": _size_mb(venv)}  # fmt: skip
        line = f"{name:16s} install {step['install-seconds']:6.1f} s, venv {step['venv-mb']:5d} MB"
        if example is not None:
            app, variant, nodes = example
            app_dir = _variant(app, variant, work / f"{app}-{variant}")
            result = flwr_run(venv, app_dir, work / f"out-{app}-{variant}", nodes=nodes,
                              rounds=args.rounds)  # fmt: skip
            step |= {"example": f"{app}:{variant}", "nodes": nodes, **result}
            line += f"; {app}:{variant} {result['seconds']} s, evaluate {result['evaluate']}"
        report["steps"].append(step)
        print(line, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
