"""One-run DP audit (Steinke, Nasr, Jagielski 2023) of every client-side DP mode, in real
federated runs.

Usage:
  python -m benchmarks.dp_audit                      # the default suite (about 30 min, 1 core)
  python -m benchmarks.dp_audit --task breast-cancer --modes none dp-sgd --epsilons 3 \\
         --m 200 --rounds 20 --clients 5
  python -m benchmarks.dp_audit --task mnist --data-dir ../shared/data/mnist --subset 300

Each run: m canaries (breast cancer: out-of-distribution points with random labels,
``gaussian_canaries``; MNIST: held-out test images with wrong labels, ``mislabel``),
each included with probability
1/2 (seeded coins) and spread over the clients' training splits by
``app.canaries.make_canary_app``; one real Flower simulation; the final global
model (decrypted by the key holder under server-blind CKKS) and every global model a
client received score each canary (``gradient_alignment_scores``; beside it, the final
model's loss drop alone, ``loss_scores``); the audit guesses in/out for the top
and bottom k (k over m/20, m/10, m/5, m/2, union bound) and reports the epsilon
lower bound at the run's delta, confidence 95 %, beside the ledger's epsilon
(``privacy.epsilon-max`` of results.json). The auditor planted the canaries and sees
what any client sees (every global model's weights): input-space canaries scored
white-box on the released models, not on per-step gradients, so its bound sits far
below the ledger even for correct code; only a bound above the ledger shows a bug.
DP noise seeds are the clients' secret ones (not repeatable); data, model init
and canaries are seeded (``--seed``). Writes benchmarks/results/dp_audit.json and .png.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.canaries import CanaryPlan, make_canary_app
from app.results import environment
from app.simulation import simulate
from benchmarks.runs import final_model, with_dealt_keys
from flwr_privacy.attacks.audit import (
    PerExampleLoss,
    gaussian_canaries,
    gradient_alignment_scores,
    loss_scores,
    membership,
    mislabel,
    one_run_audit,
)
from tasks import Task, get_task
from tasks.arrays import ArrayTask

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Setting:
    """A task's run config and canaries (scale: std of the canaries in the model's input space)."""

    task: str
    overrides: dict[str, Any]
    scale: float


def setting(args: argparse.Namespace) -> Setting:
    common = {"num-server-rounds": args.rounds, "local-epochs": args.local_epochs,
              "val-fraction": 0.02,
              "fraction-evaluate": 0.0, "seed": args.seed}  # fmt: skip
    if args.task == "breast-cancer":
        bc = {"task": "breast-cancer", "batch-size": 16, "learning-rate": args.lr or 0.5}
        return Setting("breast-cancer", common | bc, 3.0)
    return Setting("dp-cnn", common | {
        "task": "dp-cnn", "dp-cnn.dataset": "mnist", "dp-cnn.data-dir": args.data_dir,
        "batch-size": 64, "learning-rate": args.lr or 1.0}, 1.0)  # fmt: skip


def canaries(task: Task, s: Setting, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Canaries as the training dataset yields records.

    Breast cancer: N(0, scale^2) points in standardized feature space with random labels
    (raw features here). MNIST: the first ``m`` official test images (never trained on),
    each with a random wrong label.
    """
    assert isinstance(task, ArrayTask)
    x_train, _, x_test, y_test = task.load_arrays()
    if s.task == "dp-cnn":
        images = task.to_dataset(x_test[:m], y_test[:m]).tensors
        return images[0], mislabel(images[1], task.num_classes, seed=seed)
    x, y = gaussian_canaries(m, (x_train.shape[1],), task.num_classes, scale=s.scale, seed=seed)
    mean = torch.as_tensor(x_train.mean(0), dtype=x.dtype)
    return mean + x * torch.as_tensor(x_train.std(0), dtype=x.dtype), y


def released(final: nn.Module, folder: Path) -> list[nn.Module]:
    """The global models partition 0 received, round by round, on ``final``'s architecture."""
    models = []
    for path in sorted(folder.glob("round-*.pt"), key=lambda p: int(p.stem.split("-")[1])):
        model = copy.deepcopy(final)  # keeps the standardization (not in the state dict)
        model.load_state_dict(torch.load(path, weights_only=True))
        models.append(model)
    return models


def per_example_loss(task_name: str) -> PerExampleLoss:
    if task_name == "breast-cancer":
        return lambda out, y: nn.functional.binary_cross_entropy_with_logits(
            out, y.float(), reduction="none"
        )
    return lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")


def run(args: argparse.Namespace, mode: str, epsilon: float | None) -> dict[str, Any]:
    """One federated run with canaries and its audit."""
    s = setting(args)
    task = get_task(s.task, s.overrides)
    cx, cy = canaries(task, s, args.m, args.seed)
    included = membership(args.m, args.seed)
    where = np.arange(args.m) % args.clients  # canary i -> partition i mod clients
    cfg = dict(s.overrides)
    if epsilon is None and s.task == "dp-cnn" and not args.lr:
        cfg["learning-rate"] = 0.3  # unclipped SGD on the CNN diverges at the DP rate 1.0
    if epsilon is not None:
        cfg |= {"dp.mode": mode, "dp.epsilon": epsilon, "dp.delta": args.delta,
                "dp.max-grad-norm": args.clip}  # fmt: skip
    if mode == "distributed":  # one DP-SGD step a round under server-blind CKKS
        cfg |= {"he.backend": "ckks", "min-clients": args.clients, "local-epochs": 1}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "models").mkdir()
        plan = CanaryPlan(inputs=cx[included].numpy(), labels=cy[included].numpy(),
                          partitions=where[included], subset=args.subset,
                          record_dir=str(Path(tmp) / "models"))  # fmt: skip
        keys = Path(tmp) / "keys"
        cfg = with_dealt_keys(cfg, keys) | {"output-dir": str(Path(tmp) / "out")}
        res = simulate(cfg, num_supernodes=args.clients, clients=make_canary_app(plan))
        _, final = final_model(res, args.clients, keys if mode == "distributed" else None)
        models = [*released(final, Path(tmp) / "models"), final]
    seconds = time.perf_counter() - start
    loss = per_example_loss(s.task)
    # Pre-registered score: the steps of all released global models along each canary's
    # gradient; beside it (its own 95 % claim) the final model's loss drop from w_0.
    aligned = gradient_alignment_scores(models, cx, cy, loss)
    result = one_run_audit(aligned, included, delta=args.delta)
    dropped = loss_scores(final, cx, cy, loss, reference=models[0])
    last = one_run_audit(dropped, included, delta=args.delta)
    privacy = res.get("privacy") or {}
    row = {
        "task": s.task if s.task == "breast-cancer" else f"mnist (subset {args.subset}/client)",
        "mode": mode if epsilon is not None else "no DP", "target-epsilon": epsilon,
        "ledger-epsilon": privacy.get("epsilon-max"), "status": res["status"],
        "rounds": len(res["rounds"]), "local-epochs": cfg["local-epochs"],
        "clients": args.clients, "seconds": seconds,
        **result.as_dict(), "released-models": len(models),
        "final-model-only": last.as_dict(),
        "final-accuracy": (res.get("final") or {}).get("accuracy"),
    }  # fmt: skip
    ledger = row["ledger-epsilon"]
    ok = ledger is None or max(result.epsilon, last.epsilon) <= ledger
    print(f"{row['task']:<22} {row['mode']:<11} target {epsilon}  ledger "
          f"{row['ledger-epsilon']}  m {args.m}  guesses {result.guesses}  correct "
          f"{result.correct}  empirical eps {result.epsilon:.3f} (final model only: "
          f"{last.correct}/{last.guesses}, {last.epsilon:.3f})  ({seconds:.0f} s)"
          + ("" if ok else "  *** EMPIRICAL > LEDGER: DP DEFECT ***"), flush=True)  # fmt: skip
    return row


SUITE = (  # (task, mode, target epsilon); None = no DP
    ("breast-cancer", "none", None),
    ("breast-cancer", "dp-sgd", 1.0),
    ("breast-cancer", "dp-sgd", 3.0),
    ("breast-cancer", "dp-sgd", 8.0),
    ("breast-cancer", "distributed", 3.0),
    ("breast-cancer", "local", 3.0),
    ("mnist", "none", None),
    ("mnist", "dp-sgd", 3.0),
    ("mnist", "distributed", 3.0),
)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Bars: empirical epsilon lower bound beside the ledger's epsilon, per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['task'].split(' ')[0]}\n{r['mode']}" + (f"\neps {r['target-epsilon']:g}"
              if r["target-epsilon"] else "") + f"\nm {r['m']}" for r in rows]  # fmt: skip
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)), 4))
    ax.bar(x - 0.2, [r["epsilon"] for r in rows], 0.4, label="empirical lower bound (95 %)")
    ax.bar(x + 0.2, [r["ledger-epsilon"] or 0.0 for r in rows], 0.4, label="ledger epsilon")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("epsilon")
    ax.set_title(f"One-run audit (Steinke et al. 2023) at delta {rows[0]['delta']:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line (the notebook parses its parameters with it too)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--task",
        choices=("breast-cancer", "mnist"),
        default=None,
        help="one task (with --modes/--epsilons); default: the whole suite",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        default=["none", "dp-sgd"],
        choices=("none", "dp-sgd", "distributed", "local"),
    )
    p.add_argument("--epsilons", nargs="+", type=float, default=[3.0])
    p.add_argument("--m", type=int, default=0, help="canaries; 0: 100 (breast cancer), 200 (mnist)")
    p.add_argument("--rounds", type=int, default=0, help="0: 20 (breast cancer), 10 (mnist)")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--local-epochs", type=int, default=1, help="(distributed: always 1)")
    p.add_argument("--subset", type=int, default=300, help="mnist: real records per client")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--lr", type=float, default=0.0, help="0: the task's default")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "dp_audit.json"))
    return p


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(1)
    if args.task is None:
        plan = list(SUITE)
    else:
        plan = [(args.task, m, None if m == "none" else e) for m in args.modes
                for e in ([None] if m == "none" else args.epsilons)]  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for task, mode, eps in plan:
        a = argparse.Namespace(**{**vars(args), "task": task})
        a.rounds = args.rounds or (20 if task == "breast-cancer" else 10)
        a.subset = args.subset if task == "mnist" else 0
        a.m = args.m or (100 if task == "breast-cancer" else 200)
        try:
            rows.append(run(a, mode, eps))
        except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
            print(f"{task} {mode} {eps}: FAILED {e!r}", flush=True)
            continue
        out.write_text(json.dumps({"runs": rows, "args": vars(args), "environment": environment()},
                                  indent=2, default=str))  # fmt: skip (after every run)
    plot(rows, out.with_suffix(".png"))
    bad = [r for r in rows if r["ledger-epsilon"] is not None and max(
        r["epsilon"], r["final-model-only"]["epsilon"]) > r["ledger-epsilon"]]  # fmt: skip
    print(f"wrote {out} and {out.with_suffix('.png')}; "
          + (f"*** {len(bad)} run(s) with empirical epsilon above the ledger ***" if bad
             else "every DP run's empirical epsilon <= its ledger epsilon"))  # fmt: skip


if __name__ == "__main__":
    main()
