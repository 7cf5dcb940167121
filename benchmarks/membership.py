"""Membership inference against federated models: the model user's and the server's view.

    python -m benchmarks.membership                    # both tasks, no DP + dp-sgd/distributed
    python -m benchmarks.membership --tasks mnist --modes none --shadows 4
    python -m benchmarks.membership --merge a.json b.json --out membership.json  # table + PNG

On 2 busy shared cores one MNIST DP setting takes 6-13 min (the target run and
Opacus shadows); the README figures are several such runs merged with ``--merge``.

Targets (one real Flower simulation per setting, ``app.simulation.simulate``):

- ``global``: the run's final global model; members = every client's training split,
  non-members = held-out examples of the same distribution. A model user's view.
- ``client``: client 0's model after its local training in the last round, captured by
  an innermost client mod before any encryption. In plaintext FedAvg that is exactly
  what the server receives (old global + update); members = client 0's training split.
  Under server-blind CKKS the server holds only its ciphertext: this target is then what
  a server colluding with one key-holding client would decrypt.

Attacks (``flwr_privacy.attacks.membership``): loss threshold, and offline LiRA with
shadow models trained by the *same task code outside Flower* (an in-process FedAvg loop
over ``Task.train`` / ``flwr_privacy.dp.sgd.train_dp_sgd`` at the target run's own noise
multiplier, batch, epochs, rounds and client sizes). Shadows never train on a target
candidate for MNIST (they draw from the rest of MNIST's training images); WDBC has only
569 records, so each shadow trains on a random subset and only shadows that left an
example out (OUT) enter its fit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the simulation's workers

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.results import environment  # noqa: E402
from benchmarks.membership_runs import (  # noqa: E402
    Recipe,
    Target,
    Universe,
    logits,
    mnist_universe,
    run_target,
    train_shadow,
    wdbc_universe,
)
from flwr_privacy.attacks.membership import (  # noqa: E402
    LOW_FPRS,
    attack_metrics,
    check_dp_bound,
    lira_offline_scores,
    loss_threshold_scores,
    operating_point,
    true_class_phi,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("none", "dp-sgd", "distributed")
# Small federations that overfit without DP (few records per client, many local epochs),
# so the attacks have something to find; distributed DP takes one noisy step a round.
RECIPES = {
    ("breast-cancer", "local"): Recipe(clients=4, rounds=5, epochs=5, batch_size=32, lr=0.5),
    ("breast-cancer", "distributed"): Recipe(
        clients=4, rounds=30, epochs=1, batch_size=32, lr=0.5
    ),  # fmt: skip
    ("mnist", "local"): Recipe(clients=4, rounds=5, epochs=10, batch_size=16, lr=0.1),
    ("mnist", "distributed"): Recipe(clients=4, rounds=40, epochs=1, batch_size=32, lr=0.5),
}
UNITS = {
    "dp-sgd": "one training example of one client (add/remove); epsilon = the client's ledger",
    "distributed": "one training example of one client (add/remove); global: epsilon of the "
                   "noise in the sum (dp-epsilon); client: epsilon of its own share alone "
                   "(dp-epsilon-alone), what a server colluding with a key holder decrypts",
}  # fmt: skip


def _phi(model: torch.nn.Module, uni: Universe, idx: np.ndarray) -> np.ndarray:
    return true_class_phi(logits(model, uni.dataset(idx)), uni.y[idx])


def _accuracy(model: torch.nn.Module, uni: Universe, idx: np.ndarray) -> float:
    out = logits(model, uni.dataset(idx))
    pred = (out > 0).astype(np.int64) if out.ndim == 1 else out.argmax(axis=1)
    return float((pred == uni.y[idx]).mean())


def _cells(
    task: str, mode: str, eps: float | None, target_name: str, epsilon: float | None,
    delta: float, scores: dict[str, np.ndarray], member: np.ndarray,
) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for attack, score in scores.items():
        row: dict[str, Any] = {"task": task, "target": target_name, "mode": mode,
                               "epsilon-setting": eps, "epsilon-bound": epsilon,
                               "delta": delta, "attack": attack,
                               "members": int(member.sum()),
                               "non-members": int((~member).sum())}  # fmt: skip
        row |= attack_metrics(score, member)
        if epsilon is not None:
            row["bounds"] = {f"{f:g}": check_dp_bound(operating_point(score, member, f),
                                                      epsilon=epsilon, delta=delta).as_dict()
                             for f in LOW_FPRS}  # fmt: skip
        rows.append(row)
    return rows


def attack_setting(
    uni: Universe, target: Target, recipe: Recipe, mode: str, *, shadows: int, clip: float,
    seed: int, global_variance: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Scores of both attacks on both targets; returns (per-target data, ROC inputs)."""
    cands = np.sort(np.concatenate([uni.pool, uni.extra_out]))
    held_out = ~np.isin(cands, target.members_global)
    shadow_global, shadow_client, out = [], [], []
    for s in range(shadows):
        g, c0, trained = train_shadow(uni, recipe, mode, noise=target.noise_multiplier,
                                      clip=clip, seed=seed * 1000 + s + 1)  # fmt: skip
        shadow_global.append(_phi(g, uni, cands))
        shadow_client.append(_phi(c0, uni, cands))
        out.append(~np.isin(cands, trained))
    out_mask = np.stack(out)
    found: dict[str, Any] = {}
    for name, model, members, sh in (
        ("global", target.global_model, target.members_global, shadow_global),
        ("client", target.client_model, target.members_client, shadow_client),
    ):
        keep = held_out | np.isin(cands, members)  # other clients' records: neither
        member = np.isin(cands, members)[keep]
        phi = _phi(model, uni, cands)
        lira = lira_offline_scores(phi[keep], np.stack(sh)[:, keep], out_mask[:, keep],
                                   global_variance=global_variance)  # fmt: skip
        loss = np.logaddexp(0.0, -phi[keep])  # -log p_true, as the task's loss
        found[name] = {"member": member, "scores": {"loss": loss_threshold_scores(loss),
                                                    "lira": lira},
                       "train-accuracy": _accuracy(model, uni, members),
                       "out-shadows-min": int(out_mask[:, keep].sum(axis=0).min())}  # fmt: skip
    return found, {"shadows": shadows}


def settings(modes: list[str], epsilons: list[float]) -> list[tuple[str, float | None]]:
    return [(m, None) for m in modes if m == "none"] + [
        (m, e) for m in modes if m != "none" for e in epsilons
    ]


def overrides_for(base: dict[str, Any], recipe: Recipe, mode: str, eps: float | None,
                  seed: int) -> dict[str, Any]:  # fmt: skip
    o = base | recipe.overrides() | {"seed": seed}
    if mode != "none":
        o |= {"dp.mode": mode, "dp.epsilon": float(eps or 0)}
    if mode == "distributed":
        o |= {"he.backend": "ckks"}
    return o


def run_task(
    task: str, args: argparse.Namespace, data_dir: Path, rows: list[dict[str, Any]],
    save: Callable[[], None],
) -> None:  # fmt: skip
    """Every (mode, epsilon) setting of one task: target run, shadows, both attacks."""
    if task == "mnist":
        per = args.mnist_per_client * RECIPES[("mnist", "local")].clients
        uni, base = mnist_universe(args.mnist_dir, data_dir, pool_size=per,
                                   non_members=args.non_members, test_size=args.test_size,
                                   seed=args.seed)  # fmt: skip
    else:
        uni, base = wdbc_universe()
    for mode, eps in settings(args.modes, args.epsilons):
        recipe = RECIPES[(task, "distributed" if mode == "distributed" else "local")]
        if args.rounds and mode != "distributed":
            recipe = replace(recipe, rounds=args.rounds)
        if args.dist_rounds and mode == "distributed":
            recipe = replace(recipe, rounds=args.dist_rounds)
        start = time.perf_counter()
        o = overrides_for(base, recipe, mode, eps, args.seed)
        target = run_target(uni, o, recipe)
        ran = time.perf_counter() - start
        cfg = target.results["config"]
        k = args.shadows_wdbc if task == "breast-cancer" else args.shadows
        found, _ = attack_setting(uni, target, recipe, mode, shadows=k,
                                  clip=float(cfg["dp.max-grad-norm"]), seed=args.seed,
                                  global_variance=not args.per_example_variance)  # fmt: skip
        test_idx = uni.extra_out
        common = {"recipe": asdict(recipe), "target-seconds": ran,
                  "seconds": time.perf_counter() - start, "shadows": k,
                  "noise-multiplier": target.noise_multiplier,
                  "ledger-epsilon": target.epsilon, "epsilon-alone": target.epsilon_alone,
                  "unit": UNITS.get(mode)}  # fmt: skip
        for name, f in found.items():
            model = target.global_model if name == "global" else target.client_model
            eps_bound = None if mode == "none" else (
                target.epsilon_alone if (mode, name) == ("distributed", "client")
                else target.epsilon)  # fmt: skip
            cells = _cells(task, mode, eps, name, eps_bound, float(cfg["dp.delta"]),
                           f["scores"], f["member"])  # fmt: skip
            for c in cells:
                c |= common | {"train-accuracy": f["train-accuracy"],
                               "held-out-accuracy": _accuracy(model, uni, test_idx),
                               "out-shadows-min": f["out-shadows-min"]}  # fmt: skip
                c["roc"] = _roc_points(f["scores"][c["attack"]], f["member"])
                print(_line(c), flush=True)
            rows += cells
        save()


def _roc_points(score: np.ndarray, member: np.ndarray) -> dict[str, list[float]]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(member, score)
    return {"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr]}


def _line(c: dict[str, Any]) -> str:
    eps = "no DP" if c["mode"] == "none" else f"{c['mode']} eps {c['epsilon-setting']:g}"
    text = (f"{c['task']:13s} {c['target']:6s} {eps:22s} {c['attack']:4s} "
            f"AUC {c['auc']:.3f}  TPR@1% {c['tpr@0.01']:.4f}  TPR@0.1% {c['tpr@0.001']:.4f} "
            f"(n {c['members']}/{c['non-members']}; train/held-out acc "
            f"{c['train-accuracy']:.3f}/{c['held-out-accuracy']:.3f})")  # fmt: skip
    for f, b in (c.get("bounds") or {}).items():
        verdict = "VIOLATED" if b["violated"] else "ok"
        text += (
            f"\n    @FPR {f}: eps {b['epsilon']:.3g} bound {b['bound']:.4f}, TPR "
            f"{b['tpr']:.4f} [{b['tpr-lower']:.4f}, {b['tpr-upper']:.4f}] vs "
            f"{b['bound-at-fpr-upper']:.4f} at FPR<= {b['fpr-upper']:.4f}: {verdict}"
        )
    return text


def markdown(rows: list[dict[str, Any]]) -> str:
    """A README table: one line per (task, target, mode, epsilon), LiRA / loss attack."""
    head = ("| task | target | mode | eps (bound) | acc train / held-out | AUC LiRA / loss "
            "| TPR@1% | TPR@0.1% | bound @1% / @0.1% | within (point) | violated (95 %) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    key = lambda r: (r["task"], r["target"], MODES.index(r["mode"]), r["epsilon-setting"] or 0)  # noqa: E731
    by = {}
    for r in rows:
        by.setdefault(key(r), {})[r["attack"]] = r
    for k in sorted(by):
        lira, loss = by[k].get("lira"), by[k].get("loss")
        if lira is None or loss is None:
            continue
        b = lira.get("bounds") or {}
        eps = "-" if lira["mode"] == "none" else f"{lira['epsilon-setting']:g}"
        if lira["mode"] != "none" and abs(lira["epsilon-bound"] - lira["epsilon-setting"]) > 0.01:
            eps += f" ({lira['epsilon-bound']:.2f} alone)"
        both = [lira.get("bounds") or {}, loss.get("bounds") or {}]  # either attack counts
        within = "-" if not b else " / ".join(
            "yes" if all(x[f]["point-within-bound"] for x in both) else "no"
            for f in ("0.01", "0.001"))  # fmt: skip
        violated = "-" if not b else " / ".join(
            "YES" if any(x[f]["violated"] for x in both) else "no"
            for f in ("0.01", "0.001"))  # fmt: skip
        bounds = "-" if not b else f"{b['0.01']['bound']:.4f} / {b['0.001']['bound']:.4f}"
        lines.append(
            f"| {lira['task']} | {lira['target']} | {lira['mode']} | {eps} "
            f"| {lira['train-accuracy']:.3f} / {lira['held-out-accuracy']:.3f} "
            f"| {lira['auc']:.3f} / {loss['auc']:.3f} "
            f"| {lira['tpr@0.01']:.4f} / {loss['tpr@0.01']:.4f} "
            f"| {lira['tpr@0.001']:.4f} / {loss['tpr@0.001']:.4f} | {bounds} | {within} "
            f"| {violated} |"
        )  # fmt: skip
    return "\n".join(lines)


def _color(mode: str, eps: float | None) -> Any:
    import matplotlib.pyplot as plt

    if mode == "none":
        return "black"
    cmap = plt.cm.Blues if mode == "dp-sgd" else plt.cm.Oranges
    return cmap(0.45 + 0.5 * min(math.log(eps or 1.0) / math.log(8.0), 1.0))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """ROC curves on log-log axes, one panel per (task, target): LiRA solid, the loss attack
    dashed (no DP only); thin dotted lines are the DP bound e^eps FPR + delta at eps 1 and 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"], r["target"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    grid = np.logspace(-4, 0, 60)
    for ax, (task, target) in zip(axes[0], panels, strict=True):
        mine = [r for r in rows if (r["task"], r["target"]) == (task, target)]
        for r in sorted(mine, key=lambda r: (r["mode"], r["epsilon-setting"] or 0.0)):
            if r["attack"] == "loss" and r["mode"] != "none":
                continue
            eps = r["epsilon-setting"]
            name = "no DP" if r["mode"] == "none" else f"{r['mode']} eps {eps:g}"
            ax.plot(np.maximum(r["roc"]["fpr"], 1e-4), np.maximum(r["roc"]["tpr"], 1e-4),
                    color=_color(r["mode"], eps), ls="-" if r["attack"] == "lira" else "--",
                    label=f"{name} ({r['attack']}, AUC {r['auc']:.2f})")  # fmt: skip
        ax.plot(grid, grid, color="grey", lw=0.8, ls=":")
        for eps in (1.0, 3.0):
            ax.plot(grid, np.minimum(1, math.exp(eps) * grid + 1e-5), color="grey", lw=0.6,
                    ls="-.")  # fmt: skip
            ax.text(1.1e-3, math.exp(eps) * 1.1e-3 * 1.3, f"bound eps {eps:g}", fontsize=6,
                    color="grey")  # fmt: skip
        ax.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1),
               xlabel="false positive rate", ylabel="true positive rate",
               title=f"{task}: {target} model")  # fmt: skip
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line's options (the notebook parses its parameters with it too)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["breast-cancer", "mnist"],
                   choices=["breast-cancer", "mnist"])  # fmt: skip
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 3.0, 8.0])
    p.add_argument("--shadows", type=int, default=4, help="MNIST shadow federations")
    p.add_argument("--shadows-wdbc", type=int, default=16, help="breast-cancer shadows")
    p.add_argument("--rounds", type=int, default=0, help="override rounds (no DP, dp-sgd)")
    p.add_argument("--dist-rounds", type=int, default=0, help="override rounds (distributed)")
    p.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    p.add_argument(
        "--mnist-per-client",
        type=int,
        default=72,
        help="MNIST records per client (10 %% of them validate)",
    )
    p.add_argument("--non-members", type=int, default=2000, help="extra MNIST non-members")
    p.add_argument("--test-size", type=int, default=1000, help="server test images (MNIST)")
    p.add_argument(
        "--per-example-variance",
        action="store_true",
        help="LiRA: a variance per example (default: one global variance)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "membership.json")
    p.add_argument("--merge", type=Path, nargs="+", default=[],
                   help="only merge these result files into --out and plot them")  # fmt: skip
    return p


def main() -> None:
    args = build_parser().parse_args()
    if args.merge:
        merged = [r for f in args.merge for r in json.loads(f.read_text())["rows"]]
        args.out.write_text(json.dumps({"rows": merged, "merged": [str(f) for f in args.merge],
                                        "environment": environment()}, indent=1))  # fmt: skip
        for r in merged:
            print(_line(r))
        print(markdown(merged))
        plot(merged, args.out.with_suffix(".png"))
        return
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:

        def save() -> None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"rows": rows, "args": vars(args),
                                            "environment": environment()},
                                           indent=1, default=str))  # fmt: skip

        for task in args.tasks:
            run_task(task, args, Path(tmp) / "mnist", rows, save)
    png = args.out.with_suffix(".png")
    plot(rows, png)
    print(f"{len(rows)} cells in {time.perf_counter() - start:.0f} s -> {args.out}, {png}")
    bad = [r for r in rows for b in (r.get("bounds") or {}).values() if b["violated"]]
    if bad:
        print(f"DP BOUND VIOLATED in {len(bad)} cells: a DP bug; see 'bounds' in {args.out}")


if __name__ == "__main__":
    main()
