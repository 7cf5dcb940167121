"""Encrypted-model training (server-keyed HE) against plaintext and server-blind HE on WDBC.

Usage: python -m benchmarks.encrypted_model [--rounds 30] [--clients 10] [--seed 0]
       [--settings exact taylor keyed-ckks keyed-paillier blind-ckks blind-paillier]
       [--strategy fedavg|fedprox] [--lr 0.1] [--local-epochs 2]
       [--batch-size 16] [--out FILE]

Each setting is one real federated run through Flower's simulation engine with
the same seed, split and learning schedule. The server-keyed runs are
evaluated by the server on the held-out test set (it holds the key); the
plaintext runs too. Server-blind runs cannot be evaluated by the server: they
are here for cost (their accuracy is in ``benchmarks.he_accuracy``). Per
setting: final test accuracy, seconds per round, the clients' mean HE seconds
per round (server-keyed: deriving the local map + applying it to [[w]];
server-blind: encrypting the update) and bytes per round down/up (all
clients). Writes JSON + CSV (default benchmarks/results/encrypted_model.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.results import environment
from app.simulation import simulate

KEYED = {"he.mode": "server-keyed", "breast-cancer.loss": "taylor"}
SETTINGS: dict[str, dict[str, Any]] = {
    "exact": {},
    "taylor": {"breast-cancer.loss": "taylor"},
    "keyed-ckks": KEYED | {"he.backend": "ckks", "he.coeff-mod-bit-sizes": "60,40,60"},
    "keyed-paillier": KEYED | {"he.backend": "paillier"},
    "blind-ckks": {"he.backend": "ckks"},
    "blind-paillier": {"he.backend": "paillier"},
}
CLIENT_HE_SECONDS = ("he-map-s", "he-apply-s", "he-encrypt-s")


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = SETTINGS[name] | {"num-server-rounds": args.rounds, "seed": args.seed,
                            "strategy": args.strategy, "learning-rate": args.lr,
                            "local-epochs": args.local_epochs,
                            "batch-size": args.batch_size}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        res = simulate(cfg | {"output-dir": tmp}, num_supernodes=args.clients)
        seconds = time.perf_counter() - start
    rounds = res["rounds"]
    server = [r["server"]["accuracy"] for r in rounds if r.get("server")]
    return {
        "setting": name,
        "accuracy": server[-1] if server else None,
        "federated-accuracy": (res["final"].get("accuracy") if not server else None),
        "seconds": seconds,
        "seconds-per-round": float(np.mean([r["seconds"] for r in rounds])),
        "client-he-s-per-round": float(
            np.mean([sum(r["train"].get(k, 0.0) for k in CLIENT_HE_SECONDS) for r in rounds])
        ),  # fmt: skip
        "bytes-down-per-round": float(np.mean([r["bytes-down"] for r in rounds])),
        "bytes-up-per-round": float(np.mean([r["bytes-up"] for r in rounds])),
        "accuracy-per-round": server,
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line; notebooks build their arguments with it too."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", default="fedavg", choices=["fedavg", "fedprox"])
    parser.add_argument("--lr", type=float, default=0.1, help="learning-rate of every setting")
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encrypted_model.json"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.settings:
        rows.append(run(name, args))
        print({k: v for k, v in rows[-1].items() if k != "accuracy-per-round"}, flush=True)
        args.out.write_text(json.dumps({"rows": rows, "args": vars(args) | {"out": str(args.out)},
                                        "environment": environment()}, indent=2))  # fmt: skip
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "accuracy-per-round"],
                                extrasaction="ignore")  # fmt: skip
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"\nWDBC, {args.clients} clients, {args.rounds} rounds, {args.strategy}, lr {args.lr}, "
        f"{args.local_epochs} local epochs, batch {args.batch_size}"
    )
    print("setting          accuracy  s/round  client HE s/round  MB down/round  MB up/round")
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        print(f"{r['setting']:<16} {acc:>8} {r['seconds-per-round']:8.2f} "
              f"{r['client-he-s-per-round']:18.3f} {r['bytes-down-per-round'] / 1e6:14.3f} "
              f"{r['bytes-up-per-round'] / 1e6:12.3f}")  # fmt: skip
    print(f"written to {args.out} (+ .csv)")


if __name__ == "__main__":
    main()
