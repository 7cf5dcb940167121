"""Distributed DP without the Flower runtime: the same noisy steps, in one process, for tuning.

Usage: python -m benchmarks.distributed_dp_equivalent --dataset mnist --data-dir DIR
       [--clients 10] [--batch-size 512] [--epochs 30] [--lr 0.5] [--momentum 0.9]
       [--epsilon 3] [--delta 1e-5] [--clip 1.0] [--seed 0] [--out FILE]

With ``dp.mode = "distributed"``, k IID clients of n examples each take one
DP-SGD step a round on Poisson batches of rate q = batch-size / n, each adding
the noise share N(0, (z C)^2 / k); the server-blind sum is averaged uniformly
and clients add heavy-ball momentum. The released model sequence is therefore
distributed exactly as centralized DP-SGD on the union of the clients' data
with Poisson rate q, expected batch k * batch-size, noise multiplier z and
SGD momentum: this script runs that (Opacus, real accountant) in minutes
instead of the hours a 351-round Flower simulation takes on 2 cores. Use it to
choose hyperparameters; report figures from ``benchmarks.privacy_utility``
(``--mechanisms distributed``), which runs the real federated schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader

from app.results import environment
from flwr_privacy.dp import planned_noise
from tasks.dp_cnn import DpCnn, DpCnnOptions

LR_SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: constant, or decaying to 0 by the end."""
    frac = min(max(step / total, 0.0), 1.0)
    return {"constant": 1.0, "cosine": 0.5 * (1.0 + math.cos(math.pi * frac)),
            "linear": 1.0 - frac}[schedule]  # fmt: skip


def _accuracy_of(task: DpCnn, params: list[torch.Tensor], test: Any) -> float:
    """Test accuracy of a fresh model holding ``params`` (an averaged iterate)."""
    model = task.build_model()
    with torch.no_grad():
        for p, a in zip(model.parameters(), params, strict=True):
            p.copy_(a)
    return task.evaluate(model, test)["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--group-norm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512, help="per client")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedule", default="constant", choices=LR_SCHEDULES,
                        help="learning-rate decay over the rounds")  # fmt: skip
    parser.add_argument("--ema", type=float, nargs="*", default=[],
                        help="also test exponential moving averages of the iterates with these "
                             "decays (post-processing: no privacy cost)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    task = DpCnn(
        DpCnnOptions(dataset=args.dataset, data_dir=args.data_dir, group_norm=args.group_norm)
    )
    x, y, _, _ = task._arrays  # the whole training set: the union of the IID clients
    train, test = task.to_dataset(x, y), task.load_test()
    q = args.clients * args.batch_size / len(train)  # each client's rate batch / (N / k)
    steps = round(args.epochs / q)  # = the federated run's num-server-rounds
    z = planned_noise(target_epsilon=args.epsilon, delta=args.delta, sample_rate=q,
                      steps=steps, accountant="rdp")  # fmt: skip
    print(f"sample rate {q:.4f}, {steps} steps (rounds), noise multiplier of the sum {z:.3f}")
    torch.manual_seed(args.seed)
    model = task.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loader = DataLoader(train, batch_size=args.clients * args.batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=z,
            max_grad_norm=args.clip, poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(args.seed + 1),
        )  # fmt: skip
        optimizer.expected_batch_size = args.clients * args.batch_size  # the shared divisor
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer.original_optimizer, lambda t: lr_factor(args.schedule, t, steps)
    )
    emas = {d: [p.detach().clone() for p in model.parameters()] for d in args.ema}
    curve, start, taken = [], time.perf_counter(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while taken < steps:
            for xb, yb in loader:
                if taken == steps:
                    break
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
                schedule.step()
                taken += 1
                with torch.no_grad():
                    for d, avg in emas.items():
                        for a, p in zip(avg, model.parameters(), strict=True):
                            a.mul_(d).add_(p, alpha=1 - d)
                if taken % max(steps // 10, 1) == 0 or taken == steps:
                    acc = task.evaluate(model, test)["accuracy"]
                    model.train()  # evaluate leaves eval mode; Opacus' hooks need train mode
                    eps = engine.get_epsilon(args.delta)
                    curve.append({"step": taken, "accuracy": acc, "epsilon": eps}
                                 | {f"ema-{d}": _accuracy_of(task, avg, test)
                                    for d, avg in emas.items()})  # fmt: skip
                    print(f"step {taken}/{steps}: accuracy {acc:.4f}, epsilon {eps:.3f}, "
                          + "".join(f"{k} {v:.4f}, " for k, v in curve[-1].items() if "ema" in k)
                          + f"{time.perf_counter() - start:.0f}s", flush=True)  # fmt: skip
    out = args.out or Path(f"benchmarks/results/distributed_dp_equivalent_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args) | {"out": str(out)}, "noise-multiplier": z,
                               "steps": steps, "curve": curve, "environment": environment()},
                              indent=2))  # fmt: skip
    print(f"final accuracy {curve[-1]['accuracy']:.4f} at epsilon {curve[-1]['epsilon']:.3f}; "
          f"written to {out}")  # fmt: skip


if __name__ == "__main__":
    main()
