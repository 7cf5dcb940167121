"""Seconds per round of plain FedAvg on breast cancer for 10 and 100 simulated clients.

Usage: python -m benchmarks.round_time [--clients 10 100] [--rounds 5] [--out FILE]
Writes JSON (default benchmarks/results/round_time.json) and prints a table.
Round 1 includes Ray actor warm-up, so it is reported apart from the steady rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from app.results import environment
from app.simulation import simulate


def measure(num_clients: int, rounds: int, cpus_per_client: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        results = simulate(
            {"num-server-rounds": rounds, "output-dir": out},
            num_supernodes=num_clients,
            num_cpus_per_client=cpus_per_client,
        )
        wall = time.perf_counter() - start
    secs = [r["seconds"] for r in results["rounds"]]
    steady = secs[1:] or secs
    return {
        "clients": num_clients,
        "rounds": rounds,
        "cpus-per-client": cpus_per_client,
        "first-round-s": secs[0],
        "steady-round-s-mean": statistics.mean(steady),
        "steady-round-s-std": statistics.stdev(steady) if len(steady) > 1 else 0.0,
        "bytes-per-round": results["rounds"][-1]["bytes-down"] + results["rounds"][-1]["bytes-up"],
        "wall-s": wall,
        "final-accuracy": results["final"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpus-per-client", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/round_time.json"))
    args = parser.parse_args()
    rows = [measure(n, args.rounds, args.cpus_per_client) for n in args.clients]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "environment": environment()}, indent=2))
    header = ("clients", "round 1 s", "steady s/round", "bytes/round", "accuracy")
    print(" ".join(h.rjust(w) for h, w in zip(header, (8, 10, 16, 12, 9), strict=True)))
    for r in rows:
        steady = f"{r['steady-round-s-mean']:.2f} ± {r['steady-round-s-std']:.2f}"
        print(
            f"{r['clients']:>8} {r['first-round-s']:>10.2f} {steady:>16} "
            f"{r['bytes-per-round']:>12} {r['final-accuracy']:>9.4f}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
