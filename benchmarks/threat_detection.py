"""Threat detection (MCSN paper): federated pipeline vs a centralized DNN, and the paper's ablation.

Usage:
  python -m benchmarks.threat_detection compare [--dataset nsl-kdd --data-dir DIR]
         [--rounds 20] [--clients 10] [--edges 2] [--partitioners iid dirichlet]
  python -m benchmarks.threat_detection ablation [--dataset ...] [--attack sign-flip]
         [--fraction 0.3] [--noise 0.5]

``compare``: a centralized plaintext DNN trained with the same budget (rounds x
local epochs passes over the training set, same batch size and learning rate)
beside federated runs: plaintext flat, and hierarchical (``--edges``) with CKKS
and encrypted box-plot filtering; accuracy and macro-F1 on the test set (for
NSL-KDD the official KDDTest+), wall time, detection latency at batch 1 and 1024.

``ablation``: the paper's Table 3 over {DNN, +Paillier, +box plot, all three},
each hierarchical with ``--edges`` edges: precision, recall and F1 (macro), F1
with Gaussian noise of ``--noise`` feature standard deviations on the test
inputs, and F1 of a run with ``--fraction`` malicious clients. "All three" uses
CKKS: box-plot scores of encrypted updates need ciphertext multiplication,
which Paillier does not have.

Encrypted runs use keys this script deals, so it can decrypt the final model as
a key holder would. Writes JSON and CSV (default ``benchmarks/results/``), a PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from app.results import environment
from benchmarks.runs import final_model, simulated
from tasks import TrainSettings, get_task
from tasks.mcsn import latency_ms

CKKS = {"he.backend": "ckks", "he.coeff-mod-bit-sizes": "60,40,40,60"}
BOXPLOT = {"robust.filter": "boxplot"}
ABLATION: dict[str, dict[str, Any]] = {
    "DNN": {},
    "DNN + Paillier": {"he.backend": "paillier"},
    "DNN + box plot": BOXPLOT,
    "DNN + HE (CKKS) + box plot": CKKS | BOXPLOT,
}


def task_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"task": "mcsn", "mcsn.dataset": args.dataset}
    if args.data_dir:
        out["mcsn.data-dir"] = args.data_dir
    return out | {"num-server-rounds": args.rounds, "local-epochs": args.local_epochs,
                  "batch-size": args.batch_size, "learning-rate": args.lr, "seed": args.seed,
                  "fraction-evaluate": 0.0}  # fmt: skip


def federated(
    overrides: dict[str, Any], args: argparse.Namespace, noise: float = 0.0
) -> dict[str, Any]:
    """One simulated run: test metrics of its final model (decrypted if encrypted), time."""
    start = time.perf_counter()
    with simulated(task_overrides(args) | overrides, args.clients) as (res, keys):
        seconds = time.perf_counter() - start
        encrypted = res["config"]["he.backend"] != "none"
        task, model = final_model(res, args.clients, keys if encrypted else None)
        out = scored(task, model, noise)
    rounds = res["rounds"]
    return out | {
        "seconds": seconds,
        "round-seconds": float(np.mean([r["seconds"] for r in rounds])),
        "bytes-up-per-round": float(np.mean([r["bytes-up"] for r in rounds])),
        "edge-to-cloud-bytes-per-round": float(
            np.mean([r.get("tiers", {}).get("edge-to-cloud-bytes", 0) for r in rounds])
        ),
        "dropped": res.get("robust", {}),
    }


def scored(task: Any, model: torch.nn.Module, noise: float = 0.0) -> dict[str, Any]:
    """Test metrics, optionally with Gaussian input noise, and detection latency."""
    test = task.load_test()
    x, y = test.tensors
    metrics = {"test": task.evaluate(model, test)}
    if noise > 0:
        std = torch.as_tensor(task.load_arrays()[0].std(axis=0))
        gen = torch.Generator().manual_seed(0)
        noisy = x + noise * std * torch.randn(x.shape, generator=gen)
        metrics["noisy"] = task.evaluate(model, TensorDataset(noisy, y))
    xs = x.numpy()
    metrics["latency-ms"] = {str(b): latency_ms(model, xs, batch_size=b) for b in (1, 1024)}
    return metrics


def centralized(args: argparse.Namespace) -> dict[str, Any]:
    """The same DNN on the pooled training set, rounds x local epochs passes, plaintext."""
    task = get_task("mcsn", task_overrides(args))
    x, y, _, _ = task.load_arrays()
    torch.manual_seed(args.seed)
    model = task.build_model()
    train = TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    task.set_standardization(
        model, x.mean(axis=0), np.where(x.std(axis=0) > 1e-8, x.std(axis=0), 1)
    )
    start = time.perf_counter()
    budget = TrainSettings(
        epochs=args.rounds * args.local_epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed,
    )  # fmt: skip
    task.train(model, train, budget)
    return scored(task, model) | {"seconds": time.perf_counter() - start}


def summary_row(name: str, r: dict[str, Any]) -> dict[str, Any]:
    t = r["test"]
    return {
        "setting": name,
        "accuracy": t["accuracy"],
        "macro-f1": t["macro-f1"],
        "mse": t["mse"],
        "seconds": r["seconds"],
        "latency-ms-batch1": r["latency-ms"]["1"],
        "latency-ms-batch1024": r["latency-ms"]["1024"],
    }


def compare(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    runs: dict[str, Any] = {"centralized (plaintext)": centralized(args)}
    hier = {"hierarchy.edges": args.edges} | CKKS | BOXPLOT
    for part in args.partitioners:
        p = {"partitioner": part, "dirichlet-alpha": args.alpha}
        runs[f"federated plaintext flat, {part}"] = federated(p, args)
        runs[f"federated {args.edges} edges + CKKS + box plot, {part}"] = federated(p | hier, args)
        print({k: round(v["test"]["accuracy"], 4) for k, v in runs.items()}, flush=True)
    return [summary_row(k, v) for k, v in runs.items()], runs


def ablation(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    runs: dict[str, Any] = {}
    rows = []
    tiers = {"hierarchy.edges": args.edges}
    attack = {"attack.type": args.attack, "attack.fraction": args.fraction}
    for name in args.settings:
        layers = ABLATION[name]
        clean = federated(tiers | layers, args, noise=args.noise)
        attacked = federated(tiers | layers | attack, args)
        runs[name] = {"clean": clean, "attacked": attacked}
        t = clean["test"]
        classes = [k.removeprefix("precision-") for k in t if k.startswith("precision-")]
        rows.append({
            "setting": name,
            "precision": float(np.mean([t[f"precision-{c}"] for c in classes])),
            "recall": float(np.mean([t[f"recall-{c}"] for c in classes])),
            "f1": t["macro-f1"],
            "accuracy": t["accuracy"],
            f"f1-noise-{args.noise}": clean["noisy"]["macro-f1"],
            f"f1-{args.attack}-{args.fraction}": attacked["test"]["macro-f1"],
            "seconds": clean["seconds"],
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows, runs


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k.startswith(("f1", "macro-f1", "accuracy"))]
    fig, ax = plt.subplots(figsize=(2 + 2.2 * len(rows), 4))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        ax.bar(np.arange(len(rows)) + i * width, [r[key] for r in rows], width, label=key)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, [r["setting"] for r in rows],
                  rotation=15, ha="right", fontsize=7)  # fmt: skip
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line; notebooks build their arguments with it too."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["compare", "ablation"])
    parser.add_argument("--dataset", default="synthetic", choices=["synthetic", "nsl-kdd", "csv"])
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--edges", type=int, default=2)
    parser.add_argument("--partitioners", nargs="+", default=["iid", "dirichlet"])
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    parser.add_argument("--settings", nargs="+", default=list(ABLATION), choices=list(ABLATION),
                        help="ablation rows to run")  # fmt: skip
    parser.add_argument("--attack", default="sign-flip")
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--noise", type=float, default=0.5, help="test-input noise, in stds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    out = args.out or Path(f"benchmarks/results/threat_{args.mode}_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, runs = (compare if args.mode == "compare" else ablation)(args)
    out.write_text(json.dumps({"rows": rows, "runs": runs, "args": vars(args) | {"out": str(out)},
                               "environment": environment()}, indent=2, default=str))  # fmt: skip
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out.with_suffix(".png"))
    label = "SYNTHETIC data" if args.dataset == "synthetic" else args.dataset
    print(f"\n{args.mode} on {label}:")
    for r in rows:
        print("  " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()))
    print(f"written to {out} (+ .csv, .png)")


if __name__ == "__main__":
    main()
