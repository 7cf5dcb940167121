"""Attack x strategy experiment: final accuracy under each attack and malicious fraction.

Usage: python -m benchmarks.robustness [--tasks breast-cancer] [--rounds 15] [--clients 10]
       [--attacks sign-flip scale ...] [--fractions 0 0.1 0.2 0.3 0.4]
       [--strategies fedavg boxplot ...] [--k 1.5] [--quartiles inner]
       [--partitioner iid] [--out benchmarks/results/robustness.csv]

Sybil mode (FoolsGold's threat): ``--attacks label-flip-target --fractions 0 0.2 0.4``:
every attacker relabels class 1 as class 0 (malignant as benign; "A system attack"
as benign on ``mcsn``). Each row then also reports the final model's recall of the
source class on the test set (``source-recall``), the share of source-class test
samples it classifies as the target (``attack-success``), and, for the filters
(box plot, FoolsGold), the aggregation weight honest and malicious clients got per
round (dropped = 0, kept = 1; FoolsGold's own weights): ``honest-downweighted-rate``
is the share of honest client-rounds below weight 0.5, ``honest-zeroed-rate`` at 0.

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

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from app.attack import UPDATE_ATTACKS
from app.results import environment
from benchmarks.runs import final_model, simulated

ATTACKS = (*UPDATE_ATTACKS, "label-flip", "label-flip-target")
SOURCE_CLASS, TARGET_CLASS = 1, 0  # label-flip-target's defaults (app.config)
STRATEGIES = (
    "fedavg",
    "boxplot",
    "boxplot-coordinate",
    "foolsgold",
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
    "dropped-honest-rate", "dropped-malicious-rate", "source-recall", "attack-success",
    "honest-weight", "malicious-weight", "honest-downweighted-rate", "honest-zeroed-rate",
    "seconds",
)  # fmt: skip


def overrides(strategy: str, attack: str, fraction: float, clients: int) -> dict[str, Any]:
    """Run config for one cell of the grid."""
    attackers = math.floor(fraction * clients + 0.5)
    cfg: dict[str, Any] = {"attack.type": attack if fraction > 0 else "none",
                           "attack.fraction": fraction}  # fmt: skip
    if strategy in EXTRA:
        return cfg | {"strategy": "fedavg", "robust.filter": "boxplot"} | EXTRA[strategy]
    if strategy.startswith("boxplot") or strategy == "foolsgold":
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


@torch.no_grad()
def targeted(model: nn.Module, data: Dataset, source: int, target: int) -> dict[str, float]:
    """Recall of ``source`` on ``data`` and the share of its samples predicted as ``target``."""
    model.eval()
    preds, labels = [], []
    for x, y in DataLoader(data, batch_size=1024):
        out = model(x)
        preds.append((out >= 0).long() if out.ndim == 1 else out.argmax(dim=1))  # 1 logit: binary
        labels.append(y)
    pred, label = torch.cat(preds), torch.cat(labels)
    mine = label == source
    n = max(int(mine.sum()), 1)
    return {"source-recall": int((pred[mine] == source).sum()) / n,
            "attack-success": int((pred[mine] == target).sum()) / n}  # fmt: skip


def client_weights(res: dict[str, Any]) -> dict[str, float | None]:
    """Mean aggregation weight of honest and malicious client-rounds, from the filter reports.

    FoolsGold reports its weights; the box plot drops (0) or keeps (1). Strategies
    without reports (Flower's built-ins, plain FedAvg) give None.
    """
    bad = {str(n) for n in res.get("attack", {}).get("malicious-nodes", [])}
    honest: list[float] = []
    malicious: list[float] = []
    for entry in res["rounds"]:
        report = entry.get("robust")
        if not report or "weights" not in report and "scores" not in report:
            continue
        nodes = report.get("weights") or next(iter(report["scores"].values()))
        for node in nodes:
            w = (
                report["weights"][node]
                if "weights" in report
                else float(node not in report["dropped"])
            )
            (malicious if node in bad else honest).append(w)

    def mean(ws: list[float]) -> float | None:
        return statistics.mean(ws) if ws else None

    return {
        "honest-weight": mean(honest), "malicious-weight": mean(malicious),
        "honest-downweighted-rate": mean([float(w < 0.5) for w in honest]),
        "honest-zeroed-rate": mean([float(w <= 0) for w in honest]),
    }  # fmt: skip


def run_cell(task: str, strategy: str, attack: str, fraction: float, args) -> dict[str, Any]:
    """One run; encrypted runs are scored by decrypting their final model as a key holder."""
    start = time.perf_counter()
    cfg = overrides(strategy, attack, fraction, args.clients) | {
        "task": task,
        "num-server-rounds": args.rounds,
        "fraction-evaluate": 0.0,  # server-side test accuracy is what we compare
        "seed": args.seed,
        "partitioner": args.partitioner,
        "dirichlet-alpha": args.dirichlet_alpha,
    }
    if "robust.filter" in cfg:
        cfg |= {"robust.k": args.k, "robust.quartiles": args.quartiles}
    with simulated(cfg, args.clients) as (res, keys):
        server_tested = bool(res["rounds"]) and bool(res["rounds"][-1].get("server"))
        model_task, model = final_model(res, args.clients, None if server_tested else keys)
        final = (
            res["final"] if server_tested else model_task.evaluate(model, model_task.load_test())
        )
        hit = targeted(model, model_task.load_test(), SOURCE_CLASS, TARGET_CLASS)
    honest, malicious = _rates(res)
    return {
        "task": task, "strategy": strategy, "attack": attack, "fraction": fraction,
        "seed": args.seed, "accuracy": final.get("accuracy"),
        "f1": final.get("f1", final.get("macro-f1")),
        "loss": final.get("loss"), "dropped-honest-rate": honest,
        "dropped-malicious-rate": malicious, **hit, **client_weights(res),
        "seconds": time.perf_counter() - start,
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
    parser.add_argument(
        "--partitioner",
        default="iid",
        choices=["iid", "dirichlet"],
        help="use another --out per partitioner (rows are keyed without it)",
    )
    parser.add_argument("--dirichlet-alpha", type=float, default=0.3)
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
    new_file = not args.out.exists() or args.out.stat().st_size == 0
    if not new_file:
        with args.out.open() as f:
            header = f.readline().strip().split(",")
        if header != list(FIELDS):
            raise SystemExit(f"{args.out} has other columns than {FIELDS}; use another --out")
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


TABLE = ("accuracy", "source-recall", "attack-success", "honest-weight",
         "honest-downweighted-rate", "malicious-weight")  # fmt: skip


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """A markdown table of this grid's cells: one line per task, attack, strategy, fraction."""
    order = {s: i for i, s in enumerate([*STRATEGIES, *EXTRA])}
    mine = [r for r in rows if r["task"] in args.tasks and r["strategy"] in args.strategies
            and r["fraction"] in args.fractions and int(r["seed"]) == args.seed
            and (r["attack"] in args.attacks or r["fraction"] == 0)]  # fmt: skip
    mine.sort(key=lambda r: (r["task"], order.get(r["strategy"], 99), r["fraction"]))
    lines = ["| task | strategy | attack | fraction | " + " | ".join(TABLE) + " |",
             "|---" * (4 + len(TABLE)) + "|"]  # fmt: skip

    def cell(v: Any) -> str:
        return "-" if v is None or v == "" else f"{float(v):.3f}"

    for r in mine:
        lines.append(f"| {r['task']} | {r['strategy']} | {r['attack']} | {r['fraction']:g} | "
                     + " | ".join(cell(r.get(k)) for k in TABLE) + " |")  # fmt: skip
    return "\n".join(lines)


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
    print(table(rows, args))
    print(f"written to {args.out} (+ .json, .png)")


if __name__ == "__main__":
    main()
