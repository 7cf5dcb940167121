"""One simulated run as an experiment sees it: keys dealt, final model decrypted and tested.

Benchmarks and notebooks share these so that an encrypted (server-blind) run
is scored the same way everywhere: the experimenter deals the keys, as a
deployment's key dealer would, so it can decrypt the final global model as a
key holder and test it on the held-out set. The server still never holds a
secret key.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from app.config import AppConfig
from app.final_model import load_final_model, test_final_model
from app.keys import CLIENT_FILE, SERVER_FILE, generate
from app.results import environment
from app.simulation import resolve_run_config, simulate
from tasks import Task


def with_dealt_keys(overrides: dict[str, Any], keys_dir: Path) -> dict[str, Any]:
    """``overrides`` plus bundles dealt to ``keys_dir`` when the run is server-blind encrypted."""
    cfg = AppConfig.from_run_config(resolve_run_config(overrides))
    if not cfg.he.enabled or cfg.he.server_keyed:
        return overrides
    params = cfg.he.key_params(eval_keys=cfg.robust.filter != "none")
    generate(cfg.he.backend, keys_dir, params)
    return overrides | {"he.server-bundle": str(keys_dir / SERVER_FILE),
                        "he.client-bundle": str(keys_dir / CLIENT_FILE)}  # fmt: skip


def final_model(
    results: dict, clients: int | None = None, keys_dir: Path | None = None
) -> tuple[Task, nn.Module]:
    """A run's final global model, decrypted as a key holder (``keys_dir``) if it is encrypted.

    ``app.final_model.load_final_model`` with the dealt client bundle; ``clients`` is
    unused (results.json records the federated standardization the server installed).
    """
    return load_final_model(results, bundle=None if keys_dir is None else keys_dir / CLIENT_FILE)


def test_metrics_of_encrypted_model(
    results: dict, keys_dir: Path, clients: int | None = None
) -> dict[str, float]:
    """Decrypt the run's final global model as a key holder and evaluate it on the test set."""
    return test_final_model(results, bundle=keys_dir / CLIENT_FILE)


test_metrics_of_encrypted_model.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@contextmanager
def simulated(overrides: dict[str, Any], clients: int) -> Iterator[tuple[dict[str, Any], Path]]:
    """Run one simulation in a temp dir; yield its results and the keys dir (while it exists)."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        cfg = with_dealt_keys(overrides, keys) | {"output-dir": str(Path(tmp) / "out")}
        yield simulate(cfg, num_supernodes=clients), keys


def tested_run(overrides: dict[str, Any], clients: int) -> dict[str, Any]:
    """A run's results with ``test``: the final model's test metrics.

    The server's own test metrics when it could evaluate (plaintext, server-keyed),
    otherwise those of the final model decrypted with the dealt keys.
    """
    with simulated(overrides, clients) as (res, keys):
        server_tested = bool(res["rounds"]) and bool(res["rounds"][-1].get("server"))
        # Otherwise ``final`` holds the clients' federated validation metrics (or nothing).
        res["test"] = (
            res["final"] if server_tested else test_metrics_of_encrypted_model(res, keys, clients)
        )
    return res


def accuracy_per_round(res: dict[str, Any]) -> tuple[str, list[float]]:
    """Per-round accuracy: the server's test accuracy, or the clients' federated one if blind."""
    server = [r["server"]["accuracy"] for r in res["rounds"] if r.get("server")]
    if len(server) == len(res["rounds"]):
        return "server test", server
    return "federated", [(r.get("evaluate") or {}).get("accuracy", math.nan) for r in res["rounds"]]


class Runs:
    """Tested runs keyed by their run config: each distinct config is simulated once.

    Notebook sections that share a setting (the plaintext FedAvg baseline, say)
    reuse its run; every run is summarized in ``rows`` for ``save``.
    """

    def __init__(self, clients: int, base: dict[str, Any]) -> None:
        self.clients, self.base = clients, base
        self.results: dict[str, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []

    def __call__(self, overrides: dict[str, Any] | None = None, label: str = "") -> dict[str, Any]:
        """Results of the run with ``base`` + ``overrides`` (run-config keys)."""
        cfg = self.base | (overrides or {})
        key = json.dumps(resolve_run_config(cfg), sort_keys=True)  # defaults spelled out or not
        if key not in self.results:
            start = time.perf_counter()
            res = self.results[key] = tested_run(cfg, self.clients)
            kind, curve = accuracy_per_round(res)
            rounds = res["rounds"]
            self.rows.append({
                "label": label, "overrides": cfg, "test": res["test"], "status": res["status"],
                "per-round-kind": kind, "accuracy-per-round": curve,
                "seconds": time.perf_counter() - start,
                "seconds-per-round": float(np.mean([r["seconds"] for r in rounds])),
                "bytes-down-per-round": float(np.mean([r["bytes-down"] for r in rounds])),
                "bytes-up-per-round": float(np.mean([r["bytes-up"] for r in rounds])),
            })  # fmt: skip
            print(f"run {len(self.rows)} {label or cfg}: test accuracy "
                  f"{res['test'].get('accuracy', float('nan')):.4f} "
                  f"({self.rows[-1]['seconds']:.0f} s)", flush=True)  # fmt: skip
        return self.results[key]

    def save(self, path: Path, **extra: Any) -> Path:
        """Write every run's summary (and ``extra``) as JSON with the machine it ran on."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"runs": self.rows, "clients": self.clients, "base": self.base,
                                    **extra, "environment": environment()}, indent=2,
                                   default=str))  # fmt: skip
        return path
