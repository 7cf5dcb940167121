"""What a ClientApp process pays before it handles a message: import times, and the deployment.

Usage: python -m benchmarks.client_import [--repeats 5] [--modules torch app.client_app ...]
       [--deployment] [--old-tree DIR] [--deploy-repeats 1] [--out FILE]

Flower 1.41 starts a fresh ``flwr-clientapp`` process for every message of a
deployment, so every module-level import of the ClientApp is paid per message.

Import times: each module is imported in a fresh ``python -c`` process (run
from the repository root, or ``--old-tree``), timed with ``perf_counter``
around the ``import`` statement (interpreter start-up excluded); the modules
take turns, ``--repeats`` rounds, so machine load hits them alike. The table
gives the median and min in seconds and the median's ratio to ``import torch``
(the issue's bar: ``app.client_app`` with HE and DP off at most 1.3x torch).
For ``app.client_app`` it also lists the heavy libraries the import left in
``sys.modules``.

``--deployment``: the scripted 3-node, 3-round deployment
(``python -m app.deploy.local --nodes 3 --rounds 3``, real SuperLink and
SuperNodes on 127.0.0.1) timed end to end; with ``--old-tree DIR`` (a
``git worktree`` of the old commit) the two trees take turns, so both see the
same machine load. Writes JSON (default benchmarks/results/client_import.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODULES = (
    "torch", "app.client_app", "flwr.clientapp", "flwr_privacy", "flwr_privacy.he",
    "flwr_privacy.dp", "flwr_privacy.mods.he", "app.config", "tasks",
    "opacus", "sklearn", "matplotlib.pyplot", "tenseal", "phe", "pandas", "torchvision",
    "flwr_datasets",
)  # fmt: skip
HEAVY = ("opacus", "sklearn", "matplotlib", "tenseal", "phe", "pandas", "torchvision",
         "flwr_datasets", "datasets", "scipy", "seaborn", "strategies",
         "flwr_privacy.strategy")  # fmt: skip
PROBE = """
import sys, time, json
t = time.perf_counter()
import {module}
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def time_import(module: str, tree: Path) -> dict[str, Any]:
    """Seconds to import ``module`` in a fresh interpreter run in ``tree``; heavy modules seen."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
    )  # fmt: skip
    if proc.returncode != 0:
        return {"seconds": None, "heavy": [], "error": proc.stderr.strip().splitlines()[-1:]}
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def import_times(modules: list[str], repeats: int, tree: Path) -> dict[str, dict[str, Any]]:
    """Median / min / all samples per module; the modules take turns within each round."""
    samples: dict[str, list[float]] = {m: [] for m in modules}
    heavy: dict[str, list[str]] = {}
    errors: dict[str, Any] = {}
    for r in range(repeats):
        for m in modules:
            res = time_import(m, tree)
            if res["seconds"] is None:
                errors[m] = res["error"]
                continue
            samples[m].append(res["seconds"])
            heavy[m] = res["heavy"]
        print(f"  round {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    out: dict[str, dict[str, Any]] = {}
    for m in modules:
        s = samples[m]
        out[m] = {
            "median-s": round(statistics.median(s), 3) if s else None,
            "min-s": round(min(s), 3) if s else None,
            "samples-s": [round(v, 3) for v in s],
            "heavy-loaded": heavy.get(m, []),
            **({"error": errors[m]} if m in errors else {}),
        }
    torch = out.get("torch", {}).get("median-s")
    for row in out.values():
        med = row["median-s"]
        row["vs-torch"] = round(med / torch, 2) if med is not None and torch else None
    return out


def deployment_time(tree: Path, out_dir: Path, timeout: float) -> dict[str, Any]:
    """Wall seconds of ``python -m app.deploy.local --nodes 3 --rounds 3`` run in ``tree``."""
    cmd = [sys.executable, "-m", "app.deploy.local", "--nodes", "3", "--rounds", "3",
           "--out", str(out_dir), "--timeout", str(timeout)]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)})  # fmt: skip
    wall = time.monotonic() - start
    summaries = sorted(out_dir.glob("results/*/deployment.json"))
    final = json.loads(summaries[-1].read_text()).get("final") if summaries else None
    rounds = [line for line in proc.stdout.splitlines() if line.startswith("round ")]
    return {
        "tree": str(tree),
        "command": " ".join(["python", *cmd[1:]]),
        "exit-code": proc.returncode,
        "wall-s": round(wall, 1),
        "rounds": rounds,
        "final": final,
        **({"stderr-tail": proc.stderr.strip().splitlines()[-5:]} if proc.returncode else {}),
    }


def deployments(trees: dict[str, Path], repeats: int, timeout: float) -> dict[str, Any]:
    """Each tree's deployment ``repeats`` times, taking turns; medians and the speed-up."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="client-import-") as tmp:
        for r in range(repeats):
            for name, tree in trees.items():
                print(f"  deployment {name} ({r + 1}/{repeats}) in {tree}", file=sys.stderr,
                      flush=True)  # fmt: skip
                runs[name].append(deployment_time(tree, Path(tmp) / f"{name}-{r}", timeout))
    out: dict[str, Any] = {"runs": runs}
    medians = {n: statistics.median(x["wall-s"] for x in rs) for n, rs in runs.items()}
    out["median-wall-s"] = medians
    if "old" in medians and "new" in medians and medians["new"] > 0:
        out["speed-up"] = round(medians["old"] / medians["new"], 2)
    return out


def _git_head(tree: Path) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=tree)  # fmt: skip
    return proc.stdout.strip() or None


def print_table(label: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"\nimport times ({label}): fresh process each, seconds")
    print(f"{'module':<24} {'median':>8} {'min':>8} {'x torch':>8}  heavy modules loaded")
    for m, row in rows.items():
        med, low, ratio = row["median-s"], row["min-s"], row["vs-torch"]
        fmt = lambda v: "error" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{m:<24} {fmt(med):>8} {fmt(low):>8} {'' if ratio is None else ratio:>8}  "
              f"{', '.join(row['heavy-loaded']) if m == 'app.client_app' else ''}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_import", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modules", nargs="+", default=list(DEFAULT_MODULES))
    parser.add_argument("--old-tree", type=Path, help="checkout of the old commit to compare")
    parser.add_argument("--old-modules", nargs="+", default=["torch", "app.client_app"])
    parser.add_argument("--deployment", action="store_true", help="also time the deployment")
    parser.add_argument("--deploy-repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per deployment")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/client_import.json")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu-count": os.cpu_count(),
        "load-average-before": os.getloadavg(),
        "new": {"tree": str(ROOT), "commit": _git_head(ROOT)},
        "repeats": args.repeats,
    }
    print(f"timing imports in {ROOT} ({args.repeats} rounds)", file=sys.stderr)
    result["new"]["imports"] = import_times(args.modules, args.repeats, ROOT)
    if args.old_tree:
        old = args.old_tree.resolve()
        print(f"timing imports in {old}", file=sys.stderr)
        result["old"] = {"tree": str(old), "commit": _git_head(old),
                         "imports": import_times(args.old_modules, args.repeats, old)}  # fmt: skip
    if args.deployment:
        trees = {"new": ROOT, **({"old": args.old_tree.resolve()} if args.old_tree else {})}
        result["deployment"] = deployments(trees, args.deploy_repeats, args.timeout)
    result["load-average-after"] = os.getloadavg()

    print_table(f"new, {result['new']['commit']}", result["new"]["imports"])
    if "old" in result:
        print_table(f"old, {result['old']['commit']}", result["old"]["imports"])
    if "deployment" in result:
        dep = result["deployment"]
        print("\ndeployment: python -m app.deploy.local --nodes 3 --rounds 3")
        for name, runs in dep["runs"].items():
            walls = ", ".join(f"{r['wall-s']:.1f}" for r in runs)
            codes = ", ".join(str(r["exit-code"]) for r in runs)
            print(f"  {name:<4} wall {walls} s (median {dep['median-wall-s'][name]:.1f} s), "
                  f"exit {codes}")  # fmt: skip
        if "speed-up" in dep:
            print(f"  speed-up old/new: {dep['speed-up']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
