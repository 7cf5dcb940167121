"""Final test accuracy of the default job over seeds, per partitioner and strategy.

Usage: python -m benchmarks.accuracy [--seeds 0 1 2] [--rounds 30] [--clients 10]
       [--settings iid dirichlet] [--strategies fedavg fedprox] [--out FILE]
Writes JSON (default benchmarks/results/accuracy.json) and prints mean ± std.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from app.results import environment
from app.simulation import simulate

METRICS = ("accuracy", "f1", "roc-auc")


def run_grid(
    seeds: list[int], rounds: int, clients: int, settings: list[str], strategies: list[str]
) -> list[dict]:
    rows = []
    for strategy in strategies:
        for partitioner in settings:
            finals = []
            for seed in seeds:
                with tempfile.TemporaryDirectory() as out:
                    res = simulate(
                        {
                            "num-server-rounds": rounds,
                            "partitioner": partitioner,
                            "strategy": strategy,
                            "seed": seed,
                            "output-dir": out,
                        },
                        num_supernodes=clients,
                    )
                finals.append(res["final"])
            row = {
                "strategy": strategy,
                "partitioner": partitioner,
                "seeds": seeds,
                "per-seed": finals,
            }
            for m in METRICS:
                vals = [f[m] for f in finals]
                row[m] = {"mean": statistics.mean(vals), "std": statistics.pstdev(vals)}
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=["iid", "dirichlet"])
    parser.add_argument("--strategies", nargs="+", default=["fedavg", "fedprox"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accuracy.json"))
    args = parser.parse_args()
    rows = run_grid(args.seeds, args.rounds, args.clients, args.settings, args.strategies)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": vars(args) | {"out": str(args.out)},
                "rows": rows,
                "environment": environment(),
            },
            indent=2,
        )
    )
    print(f"{'strategy':>9} {'partitioner':>12} " + " ".join(f"{m:>16}" for m in METRICS))
    for r in rows:
        cells = " ".join(f"{r[m]['mean']:.4f} ± {r[m]['std']:.4f}".rjust(16) for m in METRICS)
        print(f"{r['strategy']:>9} {r['partitioner']:>12} {cells}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
