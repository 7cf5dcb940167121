"""Your own CSV data: write test files, then federated training beside a centralized MLP.

Usage:
  python -m benchmarks.own_csv write-nsl-kdd --out DIR [--nsl-kdd-dir ../shared/data/nsl-kdd]
  python -m benchmarks.own_csv write-flows --out DIR [--rows 50000 --seed 0]
  python -m benchmarks.own_csv compare --data-dir DIR [--rounds 20 --local-epochs 2 --lr 0.05
         --batch-size 64 --class-weights auto --clients 10 --seed 0 --set KEY=VALUE ...]

``write-nsl-kdd`` writes the shipped NSL-KDD files as a user's CSVs: a header
row, raw values (no ``log1p``), ``label`` = the 5-way category, no difficulty.
``write-flows`` writes the SYNTHETIC heavy-tailed 10-class flow set of
``data/synthetic_flows.py`` (test file from another seed), empty cells included.

``compare`` runs the real app (``mcsn.dataset = "csv"``, plaintext FedAvg, the
server testing on the test file) beside a centralized MLP with the same hidden
sizes, features, standardization and loss, trained on the union of the
clients' training splits (80 % of each partition at ``val-fraction`` 0.2) for
the same budget (rounds x local epochs passes, same batch size). The
centralized MLP gets its best of ``--central-lrs``, chosen on the union of the
clients' validation splits (never the test file). Prints accuracy, macro-F1,
wall time and per-class recall; writes JSON (default ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from app.results import environment
from app.simulation import resolve_run_config
from benchmarks.runs import simulated
from data import nsl_kdd, synthetic_flows
from data.partition import PartitionSpec
from data.preprocess import combine
from tasks import TrainSettings
from tasks.mcsn import Mcsn

FLOWS_TEST_SEED_OFFSET = 1_000_003  # the generated test file never shares the training seed


def nsl_kdd_frame(records: Any) -> Any:
    """NSL-KDD records as a user's CSV frame: 41 raw features, ``label`` = 5-way category."""
    frame = records.drop(columns=["difficulty"]).copy()
    nsl_kdd.labels(frame["label"])  # refuses unknown attack names
    frame["label"] = frame["label"].map(nsl_kdd.CATEGORY)
    return frame


def write_nsl_kdd(source: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, file in (("train.csv", nsl_kdd.TRAIN_FILE), ("test.csv", nsl_kdd.TEST_FILE)):
        nsl_kdd_frame(nsl_kdd.read_records(source / file)).to_csv(out / name, index=False)
        paths.append(out / name)
    return paths


def write_flows(out: Path, rows: int, seed: int) -> list[Path]:
    """SYNTHETIC flows: ``rows`` training records, ``rows // 2`` test records (another seed)."""
    out.mkdir(parents=True, exist_ok=True)
    train = synthetic_flows.generate(rows, seed)
    test = synthetic_flows.generate(rows // 2, seed + FLOWS_TEST_SEED_OFFSET)
    train.to_csv(out / "train.csv", index=False, float_format="%.6g")  # NaN -> empty cell
    test.to_csv(out / "test.csv", index=False, float_format="%.6g")
    return [out / "train.csv", out / "test.csv"]


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` run-config overrides; VALUE as TOML would read it (bare text = string)."""
    import tomllib

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. mcsn.log1p=auto")
        try:
            out[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text
    return out


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"task": "mcsn", "mcsn.dataset": args.dataset, "mcsn.data-dir": str(args.data_dir),
            "mcsn.class-weights": args.class_weights, "num-server-rounds": args.rounds,
            "local-epochs": args.local_epochs, "batch-size": args.batch_size,
            "learning-rate": args.lr, "seed": args.seed, "fraction-evaluate": 0.0,
            **parse_sets(args.set)}  # fmt: skip


def recalls(metrics: dict[str, Any], classes: tuple[str, ...]) -> dict[str, float]:
    return {c: metrics[f"recall-{c.replace(' ', '-')}"] for c in classes}


def federated(overrides: dict[str, Any], clients: int) -> dict[str, Any]:
    """One simulated plaintext run; the server's test metrics of its final model."""
    start = time.perf_counter()
    with simulated(overrides, clients) as (res, _):
        seconds = time.perf_counter() - start
    if res["status"] != "completed" or not res["rounds"][-1].get("server"):
        raise RuntimeError(f"federated run ended {res['status']!r}: {res.get('error')}")
    return {"test": res["final"], "seconds": seconds,
            "accuracy-per-round": [r["server"]["accuracy"] for r in res["rounds"]],
            "train-loss-per-round": [(r.get("train") or {}).get("train-loss")
                                     for r in res["rounds"]],
            "dataset": res.get("dataset"), "config": res["config"]}  # fmt: skip


def pooled_splits(task: Mcsn, cfg: dict[str, Any], clients: int) -> tuple[Dataset, Dataset]:
    """The union of the clients' training splits and of their validation splits."""
    spec = PartitionSpec(cfg["partitioner"], cfg["dirichlet-alpha"], cfg["seed"],
                         cfg["val-fraction"])  # fmt: skip
    parts = [task.load_partition(i, clients, spec) for i in range(clients)]
    return ConcatDataset([p.train for p in parts]), ConcatDataset([p.val for p in parts])


def as_tensors(data: Dataset) -> TensorDataset:
    x, y = zip(*(d.tensors for d in data.datasets), strict=True)  # type: ignore[attr-defined]
    return TensorDataset(torch.cat(x), torch.cat(y))


# What the centralized MLP depends on besides lr and epochs (and every mcsn.* key).
CENTRAL_KEYS = ("task", "batch-size", "seed", "partitioner", "dirichlet-alpha", "val-fraction")


def central_key(cfg: dict[str, Any], clients: int, lr: float) -> str:
    """A cache key of one centralized training: its data, split, loss, budget and lr."""
    keep = {k: v for k, v in cfg.items() if k in CENTRAL_KEYS or k.startswith("mcsn.")}
    epochs = cfg["num-server-rounds"] * cfg["local-epochs"]
    text = json.dumps(keep | {"clients": clients, "lr": lr, "epochs": epochs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def centralized(
    overrides: dict[str, Any], clients: int, lrs: list[float], cache: Path | None = None
) -> dict[str, Any]:
    """The same MLP and loss on the pooled training splits; the best lr on the pooled val.

    ``cache``: a folder of earlier centralized results (same data, split, loss, budget
    and lr), so that sweeps over federated settings train each baseline once.
    """
    cfg = resolve_run_config(overrides)
    task = Mcsn.from_config(cfg)
    train, val = (as_tensors(d) for d in pooled_splits(task, cfg, clients))
    mean, std = combine([task.feature_moments(train)]).mean_std()
    epochs = cfg["num-server-rounds"] * cfg["local-epochs"]
    tried = []
    for lr in lrs:
        hit = cache / f"{central_key(cfg, clients, lr)}.json" if cache else None
        if hit is not None and hit.is_file():
            tried.append(json.loads(hit.read_text()))
            print(f"  centralized lr {lr}: cached {hit}", flush=True)
            continue
        torch.manual_seed(cfg["seed"])
        model = task.build_model()
        task.set_standardization(model, mean.tolist(), std.tolist())
        start = time.perf_counter()
        task.train(model, train, TrainSettings(epochs, cfg["batch-size"], lr, seed=cfg["seed"]))
        seconds = time.perf_counter() - start
        tried.append({"lr": lr, "seconds": seconds, "val": task.evaluate(model, val),
                      "test": task.evaluate(model, task.load_test())})  # fmt: skip
        if hit is not None:
            hit.parent.mkdir(parents=True, exist_ok=True)
            hit.write_text(json.dumps(tried[-1]))
        print(
            f"  centralized lr {lr}: val accuracy {tried[-1]['val']['accuracy']:.4f}, "
            f"test {tried[-1]['test']['accuracy']:.4f} ({seconds:.0f} s)",
            flush=True,
        )
    best = max(tried, key=lambda r: r["val"]["accuracy"])
    return best | {"epochs": epochs, "tried": tried, "train-records": len(train),
                   "classes": task.classes}  # fmt: skip


def summary(name: str, r: dict[str, Any], classes: tuple[str, ...]) -> dict[str, Any]:
    t = r["test"]
    return {"setting": name, "accuracy": t["accuracy"], "macro-f1": t["macro-f1"],
            "seconds": r["seconds"], "recall": recalls(t, classes)}  # fmt: skip


def compare(args: argparse.Namespace) -> dict[str, Any]:
    overrides = run_overrides(args)
    fed = federated(overrides, args.clients)
    if args.federated_only:
        classes = tuple(Mcsn.from_config(resolve_run_config(overrides)).classes)
        row = summary(f"federated FedAvg, {args.clients} clients", fed, classes)
        return {"rows": [row], "federated": fed, "overrides": overrides,
                "budget": f"{args.rounds} rounds x {args.local_epochs} local epochs"}  # fmt: skip
    lrs = args.central_lrs or [args.lr, args.lr / 5]
    central = centralized(overrides, args.clients, lrs, args.central_cache)
    classes = tuple(central["classes"])
    rows = [summary(f"federated FedAvg, {args.clients} clients", fed, classes),
            summary(f"centralized MLP, lr {central['lr']:g} (best on val of {lrs})", central,
                    classes)]  # fmt: skip
    on_test = max(central["tried"], key=lambda r: r["test"]["accuracy"])
    if on_test["lr"] != central["lr"]:
        rows.append(summary(f"centralized MLP, lr {on_test['lr']:g} (best on test)", on_test,
                            classes))  # fmt: skip
    return {"rows": rows, "federated": fed, "centralized": central, "overrides": overrides,
            "budget": f"{args.rounds} rounds x {args.local_epochs} local epochs = "
                      f"{central['epochs']} centralized epochs over "
                      f"{central['train-records']} records"}  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    rows = result["rows"]
    classes = list(rows[0]["recall"])
    print(f"\n{result['budget']}")
    print("| setting | accuracy | macro-F1 | wall s | " + " | ".join(classes) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(classes))
    for r in rows:
        rec = " | ".join(f"{r['recall'][c]:.3f}" for c in classes)
        print(f"| {r['setting']} | {r['accuracy']:.4f} | {r['macro-f1']:.4f} | "
              f"{r['seconds']:.0f} | {rec} |")  # fmt: skip
    if len(rows) == 1:
        return
    gap = rows[0]["accuracy"] - max(r["accuracy"] for r in rows[1:])
    print(f"(per-class columns: recall on the test file; federated - best centralized "
          f"accuracy: {100 * gap:+.1f} points)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    kdd = sub.add_parser("write-nsl-kdd", help="train.csv / test.csv from the NSL-KDD files")
    kdd.add_argument("--out", type=Path, required=True)
    kdd.add_argument("--nsl-kdd-dir", type=Path, default=Path("../shared/data/nsl-kdd"))
    flows = sub.add_parser("write-flows", help="SYNTHETIC heavy-tailed 10-class flow CSVs")
    flows.add_argument("--out", type=Path, required=True)
    flows.add_argument("--rows", type=int, default=50_000, help="training rows (test: half)")
    flows.add_argument("--seed", type=int, default=0)
    cmp = sub.add_parser("compare", help="federated beside a centralized MLP")
    cmp.add_argument("--data-dir", type=Path, required=True)
    cmp.add_argument("--dataset", default="csv", choices=["csv", "nsl-kdd"],
                     help="nsl-kdd: the dedicated loader on the publisher's files")  # fmt: skip
    cmp.add_argument("--rounds", type=int, default=20)
    cmp.add_argument("--local-epochs", type=int, default=2)
    cmp.add_argument("--lr", type=float, default=0.05)
    cmp.add_argument("--batch-size", type=int, default=64)
    cmp.add_argument("--class-weights", default="auto",
                     choices=["auto", "inverse", "sqrt-inverse", "none"])  # fmt: skip
    cmp.add_argument("--clients", type=int, default=10)
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument(
        "--central-lrs",
        type=float,
        nargs="+",
        default=None,
        help="centralized learning rates to try (default: --lr and --lr / 5)",
    )
    cmp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra run-config key, e.g. mcsn.log1p=auto (repeatable)",
    )
    cmp.add_argument("--federated-only", action="store_true", help="no centralized baseline")
    cmp.add_argument(
        "--central-cache",
        type=Path,
        default=None,
        help="folder reusing centralized results across sweeps (keyed by the settings and "
        "the data folder's path, not its contents: clear it after rewriting the files)",
    )
    cmp.add_argument("--out", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.mode == "write-nsl-kdd":
        print("written:", *write_nsl_kdd(args.nsl_kdd_dir, args.out))
        return
    if args.mode == "write-flows":
        print("written (SYNTHETIC):", *write_flows(args.out, args.rows, args.seed))
        return
    out = args.out or Path(f"benchmarks/results/own_csv_{args.data_dir.name}.json")
    result = compare(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result | {"args": vars(args), "environment": environment()},
                              indent=2, default=str))  # fmt: skip
    print_table(result)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
