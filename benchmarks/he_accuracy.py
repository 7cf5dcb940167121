"""End-to-end accuracy of encrypted FedAvg against plaintext, same seed and config.

Usage: python -m benchmarks.he_accuracy [--rounds 30] [--clients 10] [--seeds 0]
       [--settings plaintext ckks paillier-16bit paillier-11bit] [--out FILE]

Encrypted runs use keys this script deals (``he.server-bundle`` / ``he.client-bundle``),
so that afterwards it can act as a key holder: it decrypts the saved encrypted
global model and evaluates it on the held-out test set, which the server cannot.
Writes JSON (default benchmarks/results/he_accuracy.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.keys import CLIENT_FILE, SERVER_FILE, generate
from app.results import ENCRYPTED_MODEL, PLAIN_MODEL, environment
from app.simulation import simulate
from data.partition import PartitionSpec
from data.preprocess import combine
from privacy.he import decrypt_arrays, load_bundle, load_payload
from tasks import Task, get_task
from tasks.tabular import TabularTask

SETTINGS: dict[str, dict[str, Any]] = {
    "plaintext": {},
    "ckks": {"he.backend": "ckks"},
    "paillier-16bit": {"he.backend": "paillier", "he.bits": 16},
    "paillier-11bit": {"he.backend": "paillier", "he.bits": 11},
}


def final_model(
    results: dict, clients: int, keys_dir: Path | None = None
) -> tuple[Task, nn.Module]:
    """A run's final global model, decrypted as a key holder (``keys_dir``) if it is encrypted.

    Tabular models get the same federated standardization the clients used.
    """
    cfg = results["config"]
    task = get_task(cfg["task"], cfg)
    run_dir = Path(results["path"]).parent
    if keys_dir is None:
        with np.load(run_dir / PLAIN_MODEL) as f:
            arrays = dict(f)
    else:
        arrays = decrypt_arrays(
            load_payload(run_dir / ENCRYPTED_MODEL),
            bundle=load_bundle(keys_dir / CLIENT_FILE, expect_private=True),
        )
    model = task.build_model()
    model.load_state_dict({k: torch.as_tensor(v) for k, v in arrays.items()})
    if isinstance(task, TabularTask):
        spec = PartitionSpec(
            cfg["partitioner"], cfg["dirichlet-alpha"], cfg["seed"], cfg["val-fraction"]
        )
        parts = [task.load_partition(i, clients, spec).train for i in range(clients)]
        task.set_standardization(
            model, *combine([task.feature_moments(p) for p in parts]).mean_std()
        )
    return task, model


def test_metrics_of_encrypted_model(
    results: dict, keys_dir: Path, clients: int
) -> dict[str, float]:
    """Decrypt the run's final global model as a key holder and evaluate it on the test set."""
    task, model = final_model(results, clients, keys_dir)
    return task.evaluate(model, task.load_test())


def run(setting: str, rounds: int, clients: int, seed: int) -> dict[str, Any]:
    overrides = {"num-server-rounds": rounds, "seed": seed, **SETTINGS[setting]}
    with tempfile.TemporaryDirectory() as tmp:
        out, keys = Path(tmp) / "out", Path(tmp) / "keys"
        if "he.backend" in overrides:
            generate(overrides["he.backend"], keys)
            overrides |= {
                "he.server-bundle": str(keys / SERVER_FILE),
                "he.client-bundle": str(keys / CLIENT_FILE),
            }
        results = simulate(overrides | {"output-dir": str(out)}, num_supernodes=clients)
        last = results["rounds"][-1]
        test = (
            results["final"]
            if last["server"]
            else test_metrics_of_encrypted_model(results, keys, clients)
        )
    return {
        "setting": setting,
        "seed": seed,
        "test-accuracy": test["accuracy"],
        "federated-accuracy": last["evaluate"]["accuracy"],
        "seconds-per-round": sum(r["seconds"] for r in results["rounds"]) / len(results["rounds"]),
        "bytes-per-round": last["bytes-up"] + last["bytes-down"],
        "clipped-values": last["train"].get("he-clipped", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/he_accuracy.json"))
    args = parser.parse_args()
    rows = [run(s, args.rounds, args.clients, seed) for seed in args.seeds for s in args.settings]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": vars(args) | {"out": str(args.out)}, "environment": environment()}
    args.out.write_text(json.dumps(meta | {"rows": rows}, indent=2))
    print("setting          seed  test acc  fed acc  s/round  bytes/round")
    for r in rows:
        accs = f"{r['test-accuracy']:>9.4f} {r['federated-accuracy']:>8.4f}"
        cost = f"{r['seconds-per-round']:>8.2f} {r['bytes-per-round']:>12}"
        print(f"{r['setting']:<16} {r['seed']:>4} {accs} {cost}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
