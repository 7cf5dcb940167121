"""Privacy-utility: test accuracy versus epsilon, Gaussian DP-SGD beside the Laplace variant.

Usage:
  python -m benchmarks.privacy_utility --dataset mnist --data-dir ../shared/data/mnist
         [--epsilons 0.5 1 2 4 8] [--mechanisms dp-sgd laplace-sgd] [--no-dp]
         [--rounds 30] [--batch-size 512] [--lr 2.0] [--clients 10]
  python -m benchmarks.privacy_utility --task breast-cancer --batch-size 16 --lr 0.5

Each point is one real federated run through Flower's simulation engine
(``task = dp-cnn``, or ``--task breast-cancer``; 10 IID clients, sample-level
DP, delta 1e-5): the noise is planned for the target epsilon over all rounds
x local epochs, and the epsilon reported is the largest client ledger's after
the last round (never the target). ``distributed`` runs one step a round
(pass ``--rounds`` = epochs x n / batch) under server-blind CKKS with keys this
script deals, so it can decrypt and test the final model as a key holder.
Test accuracy is the server's (or that key holder's), on the official test set. Noise is
seeded from the run seed (``dp.seeded-noise``) so the figures repeat; that is
for experiments only. Writes JSON and CSV (``benchmarks/results/``) and a plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from app.results import environment
from benchmarks.runs import tested_run


def run(args: argparse.Namespace, mechanism: str, epsilon: float | None) -> dict[str, Any]:
    """One federated run; ``epsilon`` None trains without DP."""
    cfg: dict[str, Any] = {"task": args.task}
    if args.task == "dp-cnn":
        cfg |= {"dp-cnn.dataset": args.dataset, "dp-cnn.data-dir": args.data_dir,
                "dp-cnn.group-norm": args.group_norm}  # fmt: skip
    cfg |= {
        "num-server-rounds": args.rounds, "local-epochs": 1, "batch-size": args.batch_size,
        "learning-rate": args.lr if epsilon is not None else args.no_dp_lr,
        "val-fraction": 0.02, "fraction-evaluate": 0.0, "seed": args.seed,
    }  # fmt: skip
    secagg = mechanism == "secagg-distributed"
    if epsilon is not None:
        cfg |= {"dp.mode": "distributed" if secagg else mechanism, "dp.epsilon": epsilon,
                "dp.delta": args.delta,
                "dp.max-grad-norm": args.clip, "dp.l1-clip": args.l1_clip,
                "dp.laplace-increment": args.laplace_increment,
                "dp.seeded-noise": True}  # fmt: skip
    if mechanism == "distributed" and epsilon is not None:  # under server-blind CKKS
        cfg |= {"he.backend": "ckks", "min-clients": args.clients, "dp.momentum": args.momentum}
    if secagg and epsilon is not None:  # discrete Gaussian shares under SecAgg+
        cfg |= {"secagg.enabled": True, "secagg.threshold": args.secagg_threshold,
                "min-clients": args.clients, "dp.momentum": args.momentum}  # fmt: skip
    start = time.perf_counter()
    res = tested_run(cfg, args.clients)
    seconds = time.perf_counter() - start
    curve = [r["server"]["accuracy"] for r in res["rounds"] if r["server"]] or [
        res["test"]["accuracy"]
    ]  # server-blind: only the decrypted final model is tested
    return {
        "mechanism": mechanism if epsilon is not None else "no DP",
        "target-epsilon": epsilon,
        "epsilon": res.get("privacy", {}).get("epsilon-max"),
        "delta": args.delta if epsilon is not None else None,
        "accuracy": res["test"]["accuracy"],
        "best-round-accuracy": max(curve),
        "rounds": len(res["rounds"]),
        "seconds": seconds,
        "accuracy-per-round": curve,
        "epsilon-per-round": [r.get("privacy", {}).get("epsilon-max") for r in res["rounds"]],
    }


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mech in sorted({r["mechanism"] for r in rows if r["epsilon"] is not None}):
        pts = sorted((r["epsilon"], r["accuracy"]) for r in rows if r["mechanism"] == mech)
        ax.plot(*zip(*pts, strict=True), marker="o", label=mech)
    for r in rows:
        if r["epsilon"] is None:
            ax.axhline(r["accuracy"], ls="--", color="k", lw=0.8, label="no DP")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epsilon (ledger, delta = 1e-5)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line; notebooks build their arguments with it too."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="dp-cnn", choices=["dp-cnn", "breast-cancer"])
    parser.add_argument(
        "--dataset",
        default="mnist",
        choices=["mnist", "fashion-mnist", "cifar10", "generated-gray"],
    )
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--group-norm", action=argparse.BooleanOptionalAction, default=True,
                        help="dp-cnn.group-norm (GroupNorm after each conv)")  # fmt: skip
    parser.add_argument("--epsilons", type=float, nargs="*", default=[0.5, 1, 2, 4, 8])
    parser.add_argument("--mechanisms", nargs="*", default=["dp-sgd", "laplace-sgd"],
                        choices=["dp-sgd", "distributed", "secagg-distributed",
                                 "laplace-sgd"])  # fmt: skip
    parser.add_argument("--secagg-threshold", type=float, default=0.5,
                        help="secagg.threshold of secagg-distributed runs (fraction or count)")
    parser.add_argument(
        "--momentum",
        type=float,
        default=0.9,
        help="dp.momentum of distributed runs (one step a round)",
    )
    parser.add_argument("--no-dp", action="store_true", help="add the non-private baseline")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument(
        "--no-dp-lr",
        type=float,
        default=0.1,
        help="learning rate of the non-private baseline (unclipped gradients)",
    )
    parser.add_argument("--clip", type=float, default=1.0, help="dp.max-grad-norm (L2)")
    parser.add_argument("--l1-clip", type=float, default=1.0, help="dp.l1-clip (Laplace)")
    parser.add_argument("--laplace-increment", type=float, default=0.0,
                        help="dp.laplace-increment: d in eps_t = eps_1 + (t-1) d")  # fmt: skip
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    name = args.dataset if args.task == "dp-cnn" else args.task
    out = args.out or Path(f"benchmarks/results/privacy_utility_{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    plan = [(m, e) for m in args.mechanisms for e in args.epsilons]
    plan += [("no DP", None)] if args.no_dp else []
    rows = []
    for mechanism, epsilon in plan:
        rows.append(run(args, mechanism, epsilon))
        print({k: v for k, v in rows[-1].items() if not k.endswith("-per-round")}, flush=True)
        out.write_text(json.dumps({"rows": rows, "args": vars(args) | {"out": str(out)},
                                   "environment": environment()}, indent=2))  # fmt: skip
    with out.with_suffix(".csv").open("w", newline="") as f:
        fields = [k for k in rows[0] if not k.endswith("-per-round")]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out.with_suffix(".png"), f"{name}, {args.clients} IID clients")
    print(f"\n{name}: mechanism | target eps | ledger eps | accuracy")
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        print(f"  {r['mechanism']:<12} {r['target-epsilon']!s:>6} {eps:>8} {r['accuracy']:.4f}")
    print(f"written to {out} (+ .csv, .png)")


if __name__ == "__main__":
    main()
