"""DP-SGD throughput: training examples per second with and without DP, side by side.

Usage:
  python -m benchmarks.dp_throughput [--dataset mnist --data-dir ../shared/data/mnist]
         [--examples 6000] [--batch-size 256] [--repeats 3] [--device cpu|cuda]

One process, same model (the dp-cnn task's CNN), same data and batch size:
plain SGD, Opacus DP-SGD with per-sample gradients by hooks, and by functorch
(vmap), and the Laplace variant (``torch.func`` per-example gradients). Modes
are interleaved ``--repeats`` times and the median is kept, since these
machines are noisy; the slowdown is reported as a ratio to plain SGD measured
in the same run. Writes JSON to ``benchmarks/results/dp_throughput_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from app.results import environment
from flwr_privacy.dp import DpSgd, train_dp_sgd
from flwr_privacy.dp.laplace import train_laplace_sgd
from tasks import get_task
from tasks.training import TrainSettings, fit

Trainer = Callable[[torch.nn.Module, TensorDataset], None]


def trainers(args: argparse.Namespace, loss_fn: Any) -> dict[str, Trainer]:
    bs, lr = args.batch_size, 0.1

    def dp(mode: str) -> Trainer:
        sgd = DpSgd(noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode)
        return lambda m, d: train_dp_sgd(m, d, loss_fn, sgd, epochs=1, batch_size=bs, lr=lr)

    return {
        "plain": lambda m, d: fit(m, d, loss_fn, TrainSettings(epochs=1, batch_size=bs, lr=lr)),
        "dp-sgd (hooks)": dp("hooks"),
        "dp-sgd (functorch)": dp("functorch"),
        "laplace-sgd": lambda m, d: train_laplace_sgd(
            m,
            d,
            loss_fn,
            epochs=1,
            batch_size=bs,
            epoch_epsilons=[1.0],
            l1_clip=1.0,
            loss_bound=5.0,
            max_lr=lr,
        ),  # fmt: skip
    }


def on_device(data: TensorDataset, device: str) -> TensorDataset:
    return TensorDataset(*(t.to(device) for t in data.tensors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="generated-gray")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip", nargs="*", default=[], help="modes to leave out")
    args = parser.parse_args()
    task = get_task("dp-cnn", {"dp-cnn.dataset": args.dataset, "dp-cnn.data-dir": args.data_dir,
                               "dp-cnn.generated-records": max(args.examples, 20)})  # fmt: skip
    train = task.load_partition(0, 1, _spec()).train
    idx = list(range(min(args.examples, len(train))))  # type: ignore[arg-type]
    x, y = zip(*(train[i] for i in idx), strict=True)
    data = on_device(TensorDataset(torch.stack(x), torch.stack(y)), args.device)
    modes = {k: v for k, v in trainers(args, task.loss_fn(data)).items() if k not in args.skip}
    times: dict[str, list[float]] = {k: [] for k in modes}
    for r in range(args.repeats):
        for name, train_fn in modes.items():
            torch.manual_seed(r)
            model = task.build_model().to(args.device)
            start = time.perf_counter()
            train_fn(model, data)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            print(f"repeat {r}: {name}: {len(data) / times[name][-1]:.0f} examples/s", flush=True)
    rate = {k: len(data) / statistics.median(v) for k, v in times.items()}
    rows = [{"mode": k, "examples-per-s": rate[k], "slowdown-vs-plain": rate["plain"] / rate[k]}
            for k in rate]  # fmt: skip
    out = Path(f"benchmarks/results/dp_throughput_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "seconds": times, "args": vars(args),
                               "environment": environment()}, indent=2))  # fmt: skip
    print(f"\n{args.dataset}, {len(data)} examples, batch {args.batch_size}, {args.device}:")
    for row in rows:
        print(f"  {row['mode']:<20} {row['examples-per-s']:>9.0f} ex/s  "
              f"x{row['slowdown-vs-plain']:.2f} vs plain")  # fmt: skip
    print(f"written to {out}")


def _spec() -> Any:
    from data.partition import PartitionSpec

    return PartitionSpec(partitioner="iid", alpha=1.0, seed=0, val_fraction=0.01)


if __name__ == "__main__":
    main()
