"""End-to-end accuracy of encrypted FedAvg against plaintext, same seed and config.

Usage: python -m benchmarks.he_accuracy [--rounds 30] [--clients 10] [--seeds 0]
       [--settings plaintext ckks paillier-16bit paillier-11bit] [--out FILE]

Encrypted runs use keys this script deals (``he.server-bundle`` / ``he.client-bundle``),
so that afterwards it can act as a key holder: it decrypts the saved encrypted
global model and evaluates it on the held-out test set, which the server cannot.
Writes JSON (default benchmarks/results/he_accuracy.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from app.results import environment
from benchmarks.runs import tested_run

SETTINGS: dict[str, dict[str, Any]] = {
    "plaintext": {},
    "ckks": {"he.backend": "ckks"},
    "paillier-16bit": {"he.backend": "paillier", "he.bits": 16},
    "paillier-11bit": {"he.backend": "paillier", "he.bits": 11},
}


def run(setting: str, rounds: int, clients: int, seed: int) -> dict[str, Any]:
    results = tested_run({"num-server-rounds": rounds, "seed": seed, **SETTINGS[setting]}, clients)
    last = results["rounds"][-1]
    return {
        "setting": setting,
        "seed": seed,
        "test-accuracy": results["test"]["accuracy"],
        "federated-accuracy": last["evaluate"]["accuracy"],
        "seconds-per-round": sum(r["seconds"] for r in results["rounds"]) / len(results["rounds"]),
        "bytes-per-round": last["bytes-up"] + last["bytes-down"],
        "clipped-values": last["train"].get("he-clipped", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/he_accuracy.json"))
    args = parser.parse_args()
    rows = [run(s, args.rounds, args.clients, seed) for seed in args.seeds for s in args.settings]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": vars(args) | {"out": str(args.out)}, "environment": environment()}
    args.out.write_text(json.dumps(meta | {"rows": rows}, indent=2))
    print("setting          seed  test acc  fed acc  s/round  bytes/round")
    for r in rows:
        accs = f"{r['test-accuracy']:>9.4f} {r['federated-accuracy']:>8.4f}"
        cost = f"{r['seconds-per-round']:>8.2f} {r['bytes-per-round']:>12}"
        print(f"{r['setting']:<16} {r['seed']:>4} {accs} {cost}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
