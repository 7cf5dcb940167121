"""Robust filtering over SecAgg+ group sums on NSL-KDD: accuracy under attack, exclusions.

Usage: python -m benchmarks.secure_groups --data-dir ../shared/data/nsl-kdd [--clients 100]
       [--rounds 20] [--groups 3 5 10] [--attacks same-value label-flip-target]
       [--fractions 0.1 0.2] [--seed 0] [--out benchmarks/results/secure_groups.json]

Every client trains the threat DNN (122-128-64-5, 1 local epoch, batch 64, lr 0.05, inverse
class weights from its own labels) on its IID share of KDDTrain+; accuracy is on KDDTest+.
Aggregation is computed as the server computes it, from the same toolkit functions
``SecAggPlus(robust=GroupFilter(...))`` calls (``random_groups``, ``filter_groups``,
``Suspicion``), over the values SecAgg+ would sum: each client's update times its FedAvg
weight, clipped to +-``--clip`` (SecAgg+'s fixed-point clip, 4.0 by default). That the
masked protocol unmasks exactly these group sums is what ``tests/flwr_privacy/
test_secagg_groups.py`` checks; no masking runs here, so 21 runs of 100 clients take
minutes, not hours. Rows:

- ``secagg`` (clean and attacked): SecAgg+ FedAvg, the sum of every clipped value;
- ``client-boxplot``: the plaintext per-client box plot (the server sees every update);
- ``groups-g``: fresh random groups of ``g``, box plot over the group means, suspicion on;
- ``groups-g-mad``: the same groups, the MAD rule (drops groups far from the median group;
  breakdown at half the groups), suspicion on;
- ``groups-g-median``: the same groups, Flower's coordinate-wise median over the group means
  (breakdown 50 % of groups; it drops no group, so suspicion has nothing to count).

``--cost N`` instead times real masked rounds: the real ``SecAggPlus`` against the real
``secagg_mod`` of ``N`` clients in one process, through the in-process grid the tests use
(``tests/flwr_privacy/test_secagg_groups.py``: every message handed to the client's
``ClientApp``, no engine), plain SecAgg+ beside groups of each ``--groups`` size, ``--values``
values an update, simulated trust. All clients run one after another in this process, so a
round's seconds are the whole federation's compute, client and server.

Attackers: ``same-value`` (every coordinate of the update set to ``--value``, then clipped
like any other value) or ``label-flip-target`` (DoS records relabelled normal). Writes JSON
(per run: accuracy per round, final macro-F1, attackers and honest clients excluded per
round) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data.nsl_kdd import load
from flwr_privacy.secagg.groups import GroupFilter, Suspicion, filter_groups, random_groups
from flwr_privacy.strategy.box_plot import BoxPlot, box_filter, client_scores
from tasks.mcsn import ThreatDNN, class_weights
from tasks.metrics import precision_recall_f1

HIDDEN, CLASSES = (128, 64), 5
SOURCE, TARGET = 1, 0  # label-flip-target: DoS read as normal


def flat(model: nn.Module) -> np.ndarray:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy().copy()


def assign(model: nn.Module, vector: np.ndarray) -> None:
    torch.nn.utils.vector_to_parameters(torch.as_tensor(vector, dtype=torch.float32),
                                        model.parameters())  # fmt: skip


class Federation:
    """Clients' data, a model, and local training from a given global vector."""

    def __init__(self, data_dir: str, clients: int, seed: int) -> None:
        x, y, self.x_test, self.y_test = load(data_dir)
        order = np.random.default_rng(seed).permutation(len(x))
        self.parts = np.array_split(order, clients)
        self.x, self.y = x.astype(np.float32), y
        self.model = ThreatDNN(x.shape[1], HIDDEN, CLASSES)
        self.model.standardize.set(x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6))
        torch.manual_seed(seed)
        self.start = flat(ThreatDNN(x.shape[1], HIDDEN, CLASSES))

    def update(self, client: int, glob: np.ndarray, flipped: bool, seed: int) -> np.ndarray:
        idx = self.parts[client]
        y = self.y[idx].copy()
        if flipped:
            y[y == SOURCE] = TARGET
        x, t = torch.as_tensor(self.x[idx]), torch.as_tensor(y)
        assign(self.model, glob)
        loss = nn.CrossEntropyLoss(weight=class_weights(y, CLASSES, "inverse"))
        # one epoch of SGD over shuffled batches of 64, as tasks.training.train_epochs runs
        # it, on tensors sliced directly (a DataLoader's per-record collation is 5x slower)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self.model.train()
        for i in range(0, len(x), 64):
            batch = order[i : i + 64]
            opt.zero_grad()
            loss(self.model(x[batch]), t[batch]).backward()
            opt.step()
        return flat(self.model) - glob

    def evaluate(self, glob: np.ndarray) -> tuple[float, float]:
        assign(self.model, glob)
        self.model.eval()
        with torch.no_grad():
            pred = self.model(torch.as_tensor(self.x_test, dtype=torch.float32)).argmax(1).numpy()
        f1 = precision_recall_f1(self.y_test, pred, CLASSES)[2].mean()
        return float((pred == self.y_test).mean()), float(f1)


def run(fed: Federation, *, method: str, attack: str, fraction: float, rounds: int,
        clip: float, value: float, seed: int) -> dict[str, Any]:  # fmt: skip
    n = len(fed.parts)
    attackers = set(range(int(round(fraction * n)))) if attack != "none" else set()
    parts = method.split("-")  # groups-<g>[-<rule>]
    size = int(parts[1]) if parts[0] == "groups" else 0
    rule = parts[2] if len(parts) > 2 else "boxplot"
    settings = GroupFilter(size=size, method=rule, rounds=rounds) if size else None
    suspicion = (Suspicion(alpha=settings.alpha, min_rounds=settings.min_rounds,
                           planned=rounds) if settings else None)  # fmt: skip
    sizes = np.array([len(p) for p in fed.parts], dtype=float)
    glob, history = fed.start.copy(), []
    start = time.perf_counter()
    for r in range(1, rounds + 1):
        active = [c for c in range(n) if suspicion is None or c not in suspicion.excluded]
        deltas = {}
        for c in active:
            if attack == "same-value" and c in attackers:
                deltas[c] = np.full_like(glob, value)
            else:
                flipped = attack == "label-flip-target" and c in attackers
                deltas[c] = fed.update(c, glob, flipped, seed=seed * 1000 + r * 10 + c % 7)
        w = sizes / sizes.max()
        if method == "client-boxplot":  # plaintext: the server sees every update
            nodes = list(deltas)
            stacked = np.stack([deltas[c] for c in nodes])
            scores = client_scores(stacked, np.zeros_like(glob), ("median-distance",))
            report = box_filter(nodes, scores, BoxPlot(), invalid={})
            kept = [c for c in nodes if c not in report.dropped]
            step = np.average([deltas[c] for c in kept], axis=0, weights=sizes[kept])
        else:  # what SecAgg+ sums: the weighted update, clipped to the fixed-point range
            values = {c: np.clip(w[c] * d, -clip, clip) for c, d in deltas.items()}
            if settings is None:
                step = sum(values.values()) / w[active].sum()
            else:
                groups = random_groups(active, settings.size)
                means = np.stack([sum(values[c] for c in g) / w[g].sum() for g in groups])
                gw = np.array([w[g].sum() for g in groups])
                step, dropped = filter_groups(means, gw, np.zeros_like(glob), settings)
                assert suspicion is not None
                suspicion.record(r, groups, set(dropped))
        glob = glob + step
        acc, f1 = fed.evaluate(glob)
        out = set(suspicion.excluded) if suspicion else set()
        print(f"  {method} {attack} {fraction:g} round {r}: accuracy {acc:.4f}, excluded "
              f"{len(out & attackers)} attackers, {len(out - attackers)} honest "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        history.append({"round": r, "accuracy": acc, "macro-f1": f1,
                        "attackers-excluded": len(out & attackers),
                        "honest-excluded": len(out - attackers)})  # fmt: skip
    return {"method": method, "attack": attack, "fraction": fraction, "attackers": len(attackers),
            "clients": n, "rounds": history, "final": history[-1],
            "seconds": time.perf_counter() - start}  # fmt: skip


def cost(clients: int, sizes: list[int], values: int) -> list[dict[str, Any]]:
    """Seconds of one real masked round and of the server's unmasking, plain vs groups."""
    from flwr.supercore.task_identity import TaskIdentity

    import tests.flwr_privacy.test_secagg_groups as harness

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # play the server
    harness.SIZE = values
    rows = []
    for size in [0, *sizes]:
        inner = harness.FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=clients,
                               min_available_nodes=clients)  # fmt: skip
        robust = GroupFilter(size=size, suspicion=False) if size else None
        strategy = harness.SecAggPlus(inner, secagg=harness.SecAggSettings(trust="simulated"),
                                      robust=robust)  # fmt: skip
        start = time.perf_counter()
        (report,) = harness._rounds(strategy, harness.InProcessGrid(clients), rounds=1)
        row = {"group-size": size or clients, "seconds": time.perf_counter() - start,
               "unmask-compute-s": report.get("unmask-compute-s", 0.0), "groups": report["groups"],
               "upload-bytes": report["stages"]["mask"]["bytes-up"]}  # fmt: skip
        print(f"cost: {'plain SecAgg+' if not size else f'groups of {size}':14s} "
              f"{row['seconds']:6.1f} s a round, server unmask {row['unmask-compute-s']:.2f} s, "
              f"{row['groups']} groups", flush=True)
        rows.append(row)
    return rows


def first_round(history: list[dict[str, Any]], key: str, target: int) -> int | None:
    return next((h["round"] for h in history if h[key] >= target), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data/nsl-kdd")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--groups", type=int, nargs="*", default=[3, 5, 10])
    p.add_argument("--median-groups", type=int, nargs="*", default=[3, 5],
                   help="group sizes also run with Flower's median over the group means")
    p.add_argument("--mad-groups", type=int, nargs="*", default=[3, 5, 10],
                   help="group sizes also run with the MAD rule (drops groups, suspicion on)")
    p.add_argument("--only-groups", action="store_true",
                   help="skip the secagg and client-boxplot rows of the attacked runs")
    p.add_argument("--attacks", nargs="+", default=["same-value", "label-flip-target"])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2])
    p.add_argument("--clip", type=float, default=4.0)
    p.add_argument("--value", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-clean", action="store_true", help="skip the clean SecAgg+ run")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/secure_groups.json"))
    p.add_argument("--cost", type=int, default=0, metavar="N",
                   help="time one real masked round of N clients instead (plain vs --groups)")
    p.add_argument("--values", type=int, default=100_000, help="update size for --cost")
    args = p.parse_args()
    if args.cost:
        rows = cost(args.cost, args.groups, args.values)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cost": rows}, indent=1))
        print(f"written to {args.out}")
        return
    fed = Federation(args.data_dir, args.clients, args.seed)
    common = dict(rounds=args.rounds, clip=args.clip, value=args.value, seed=args.seed)
    plan = [("secagg", "none", 0.0)] if not args.no_clean else []
    for attack in args.attacks:
        for fraction in args.fractions:
            methods = [*([] if args.only_groups else ["secagg", "client-boxplot"]),
                       *(f"groups-{g}" for g in args.groups),
                       *(f"groups-{g}-median" for g in args.median_groups),
                       *(f"groups-{g}-mad" for g in args.mad_groups)]
            plan += [(m, attack, fraction) for m in methods]
    results = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for method, attack, fraction in plan:
        row = run(fed, method=method, attack=attack, fraction=fraction, **common)
        results.append(row)
        fin = row["final"]
        print(f"{method:15s} {attack:18s} {fraction:4.2f}  acc {fin['accuracy']:.4f}  "
              f"F1 {fin['macro-f1']:.4f}  attackers out {fin['attackers-excluded']}/"
              f"{row['attackers']} (all by round "
              f"{first_round(row['rounds'], 'attackers-excluded', max(row['attackers'], 1))})  "
              f"honest out {fin['honest-excluded']}  {row['seconds']:.0f} s", flush=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "runs": results}, indent=1))  # fmt: skip
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
