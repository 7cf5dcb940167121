"""Attack x strategy experiment: final accuracy under each attack and malicious fraction.

Usage: python -m benchmarks.robustness [--tasks breast-cancer] [--rounds 15] [--clients 10]
       [--attacks sign-flip scale ...] [--fractions 0 0.1 0.2 0.3 0.4]
       [--strategies fedavg boxplot ...] [--k 1.5] [--quartiles inner]
       [--out benchmarks/results/robustness.csv]

Runs real Flower simulations. Each finished run is appended to the CSV at once,
and runs already in it are skipped, so an interrupted experiment resumes. Writes
the CSV, a JSON summary beside it and a PNG plot of final accuracy. The
built-ins get oracle settings: Krum/MultiKrum/Bulyan assume the true number of
attackers (capped where Flower's 2f+3 / 4f+3 rules allow), FedTrimmedAvg trims
the attack fraction from each end (at least 0.1, at most 0.4).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from app.attack import UPDATE_ATTACKS
from app.results import environment
from benchmarks.runs import tested_run

ATTACKS = (*UPDATE_ATTACKS, "label-flip")
STRATEGIES = (
    "fedavg",
    "boxplot",
    "boxplot-coordinate",
    "krum",
    "multikrum",
    "fedtrimmedavg",
    "fedmedian",
    "bulyan",
)
# Not in the default grid: the encrypted variant and its plaintext twin (same score).
EXTRA = {
    "boxplot-mean": {"robust.scores": "mean-distance"},
    "boxplot-ckks": {"he.backend": "ckks", "he.coeff-mod-bit-sizes": "60,40,40,60"},
}
FIELDS = (
    "task", "strategy", "attack", "fraction", "seed", "accuracy", "f1", "loss",
    "dropped-honest-rate", "dropped-malicious-rate", "seconds",
)  # fmt: skip


def overrides(strategy: str, attack: str, fraction: float, clients: int) -> dict[str, Any]:
    """Run config for one cell of the grid."""
    attackers = math.floor(fraction * clients + 0.5)
    cfg: dict[str, Any] = {"attack.type": attack if fraction > 0 else "none",
                           "attack.fraction": fraction}  # fmt: skip
    if strategy in EXTRA:
        return cfg | {"strategy": "fedavg", "robust.filter": "boxplot"} | EXTRA[strategy]
    if strategy.startswith("boxplot"):
        return cfg | {"strategy": "fedavg", "robust.filter": strategy}
    if strategy in ("krum", "multikrum"):
        cfg["robust.num-malicious"] = min(attackers, (clients - 3) // 2)
    elif strategy == "bulyan":
        cfg["robust.num-malicious"] = min(attackers, (clients - 3) // 4)
    elif strategy == "fedtrimmedavg":
        cfg["robust.trim-beta"] = min(max(fraction, 0.1), 0.4)
    return cfg | {"strategy": strategy}


def _rates(res: dict[str, Any]) -> tuple[float | None, float | None]:
    totals = res.get("robust")
    if not totals:
        return None, None
    malicious = totals.get("malicious-client-rounds", 0)
    honest = totals["client-rounds"] - malicious
    dropped_honest = totals.get("dropped-honest", totals["dropped"])
    return (
        dropped_honest / honest if honest else None,
        totals.get("dropped-malicious", 0) / malicious if malicious else None,
    )


def run_cell(task: str, strategy: str, attack: str, fraction: float, args) -> dict[str, Any]:
    """One run; encrypted runs are scored by decrypting their final model as a key holder."""
    start = time.perf_counter()
    cfg = overrides(strategy, attack, fraction, args.clients) | {
        "task": task,
        "num-server-rounds": args.rounds,
        "fraction-evaluate": 0.0,  # server-side test accuracy is what we compare
        "seed": args.seed,
    }
    if "robust.filter" in cfg:
        cfg |= {"robust.k": args.k, "robust.quartiles": args.quartiles}
    res = tested_run(cfg, args.clients)
    final = res["test"]
    honest, malicious = _rates(res)
    return {
        "task": task, "strategy": strategy, "attack": attack, "fraction": fraction,
        "seed": args.seed, "accuracy": final.get("accuracy"), "f1": final.get("f1"),
        "loss": final.get("loss"), "dropped-honest-rate": honest,
        "dropped-malicious-rate": malicious, "seconds": time.perf_counter() - start,
    }  # fmt: skip


def _key(row: dict[str, Any]) -> tuple:
    return (row["task"], row["strategy"], row["attack"], float(row["fraction"]), int(row["seed"]))


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as f:
        return [
            {
                k: (v if k in ("task", "strategy", "attack") else (float(v) if v else None))
                for k, v in row.items()
            }  # fmt: skip
            for row in csv.DictReader(f)
        ]


def summarize(rows: list[dict[str, Any]], max_fraction: float = 0.3) -> dict[str, Any]:
    """Per strategy: clean accuracy, worst drop vs clean up to ``max_fraction``, mean accuracy."""
    out: dict[str, Any] = {}
    for strategy in sorted({r["strategy"] for r in rows}):
        mine = [r for r in rows if r["strategy"] == strategy]
        clean = [r["accuracy"] for r in mine if r["fraction"] == 0]
        attacked = [r for r in mine if 0 < r["fraction"] <= max_fraction + 1e-9]
        if not clean or not attacked:
            continue
        out[strategy] = {
            "clean-accuracy": clean[0],
            f"mean-accuracy-attacked-<={max_fraction}": statistics.mean(
                r["accuracy"] for r in attacked
            ),
            f"worst-drop-<={max_fraction}": max(clean[0] - r["accuracy"] for r in attacked),
            "false-drop-rate-clean": next(
                (r["dropped-honest-rate"] for r in mine if r["fraction"] == 0), None
            ),
        }
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = [a for a in ATTACKS if any(r["attack"] == a for r in rows)] or ["none"]
    fig, axes = plt.subplots(1, len(attacks), figsize=(4 * len(attacks), 3.6), squeeze=False)
    for ax, attack in zip(axes[0], attacks, strict=True):
        for strategy in [*STRATEGIES, *EXTRA]:
            pts = sorted(
                (r["fraction"], r["accuracy"])
                for r in rows
                if r["strategy"] == strategy and (r["attack"] == attack or r["fraction"] == 0)
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=strategy)
        ax.set_title(attack)
        ax.set_xlabel("malicious fraction")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final test accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line; notebooks build their arguments with it too."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["breast-cancer"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=[*STRATEGIES, *EXTRA]
    )
    parser.add_argument("--k", type=float, default=1.5, help="box-plot fence width")
    parser.add_argument("--quartiles", default="inner", choices=["inner", "linear"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/robustness.csv"))
    return parser


def run_grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cell of the grid, resuming from the rows already in ``args.out`` (CSV)."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(args.out)
    done = {_key(r) for r in rows}
    cells = [
        (task, strategy, attack if fraction > 0 else "none", fraction)
        for task in args.tasks
        for strategy in args.strategies
        for fraction in args.fractions
        for attack in (args.attacks if fraction > 0 else ["none"])
    ]
    todo = [c for c in cells if (*c, args.seed) not in done]
    print(f"{len(cells)} runs, {len(cells) - len(todo)} already in {args.out}")
    new_file = not args.out.exists()
    with args.out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for i, cell in enumerate(todo, 1):
            row = run_cell(*cell, args)
            writer.writerow(row)
            f.flush()
            rows.append(row)
            print(f"[{i}/{len(todo)}] {cell}: accuracy {row['accuracy']:.4f} "
                  f"({row['seconds']:.0f}s)", flush=True)  # fmt: skip
    return rows


def main() -> None:
    args = build_parser().parse_args()
    rows = run_grid(args)
    summary = summarize(rows)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "summary": summary,
                "args": vars(args) | {"out": str(args.out)},
                "environment": environment(),
            },
            indent=2,
        )  # fmt: skip
    )
    plot(rows, args.out.with_suffix(".png"))
    for strategy, s in summary.items():
        print(strategy.rjust(20), {k: None if v is None else round(v, 4) for k, v in s.items()})
    print(f"written to {args.out} (+ .json, .png)")


if __name__ == "__main__":
    main()
