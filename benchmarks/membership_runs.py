"""The models ``benchmarks.membership`` attacks: target runs through Flower, shadows outside it.

A target is a real simulated run of this app (``app.simulation.simulate`` via
``benchmarks.runs.simulated``) whose ClientApp has one extra innermost mod that saves
client 0's trained weights in the last round (before the HE mod would encrypt them).
Shadows repeat the same recipe with the task's own training code in one process: FedAvg
over the same number of equally sized clients, ``Task.train`` without DP, Opacus DP-SGD
(``flwr_privacy.dp.sgd.train_dp_sgd``) at the noise multiplier the target's clients used,
and for distributed DP one noisy step a round with the client's share of that noise.
"""

from __future__ import annotations

import copy
import gzip
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from torch import nn
from torch.utils.data import TensorDataset

from app import client_app as apps
from app.dp_client import ALONE_KEY
from app.records import SETUP_ACTION
from app.simulation import simulate
from benchmarks.runs import final_model, with_dealt_keys
from data.partition import PartitionSpec
from data.preprocess import combine
from flwr_privacy.dp.sgd import DpSgd, train_dp_sgd
from flwr_privacy.he.protocol import SCORES_ACTION
from flwr_privacy.mods.he import decrypt_scores
from tasks import Task, TrainSettings, get_task
from tasks.tabular import TabularTask


@dataclass(frozen=True)
class Recipe:
    """One federated training schedule (the target's run config and its shadows')."""

    clients: int
    rounds: int
    epochs: int
    batch_size: int
    lr: float
    val_fraction: float = 0.1

    def overrides(self) -> dict[str, Any]:
        return {"num-server-rounds": self.rounds, "local-epochs": self.epochs,
                "batch-size": self.batch_size, "learning-rate": self.lr,
                "val-fraction": self.val_fraction, "min-clients": self.clients,
                "fraction-evaluate": 0.0}  # fmt: skip


@dataclass(frozen=True)
class Universe:
    """Every record a run or a shadow may train on, and who is a target candidate.

    ``pool``: the records the target federation is split over (its partitions);
    ``extra_out``: held-out records never trained on (non-members beside the
    clients' validation splits); ``shadow_source``: what shadows draw their pools from.
    """

    task: Task
    x: np.ndarray
    y: np.ndarray
    pool: np.ndarray
    extra_out: np.ndarray
    shadow_source: np.ndarray

    def dataset(self, idx: np.ndarray) -> TensorDataset:
        return self.task.to_dataset(self.x[idx], self.y[idx])

    def client_splits(self, pool: np.ndarray, recipe: Recipe, seed: int) -> list[np.ndarray]:
        """Universe indices of each client's training split of ``pool`` (IID, as the app)."""
        spec = PartitionSpec("iid", 0.3, seed, recipe.val_fraction)
        return [pool[spec.client_split(self.y[pool], i, recipe.clients)[0]]
                for i in range(recipe.clients)]  # fmt: skip


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x00000803 if array.ndim == 3 else 0x00000801
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def mnist_universe(
    source: Path, out_dir: Path, *, pool_size: int, non_members: int, test_size: int, seed: int
) -> tuple[Universe, dict[str, Any]]:
    """A random MNIST subset as the federation's data folder (real images, IDX files).

    Pool, extra non-members and shadow population are disjoint random draws from MNIST's
    training images, so members and non-members are exchangeable (the official test set
    has other writers: a distribution shift an attack could exploit without any leak).
    """
    from data.images import load_images

    x, y = load_images("mnist", source, train=True)
    xt, yt = load_images("mnist", source, train=False)
    order = np.random.default_rng(seed + 1000).permutation(len(y))
    pool = np.sort(order[:pool_size])
    extra = np.sort(order[pool_size : pool_size + non_members])
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_idx(out_dir / "train-images-idx3-ubyte.gz", x[pool, 0])
    _write_idx(out_dir / "train-labels-idx1-ubyte.gz", y[pool])
    _write_idx(out_dir / "t10k-images-idx3-ubyte.gz", xt[:test_size, 0])
    _write_idx(out_dir / "t10k-labels-idx1-ubyte.gz", yt[:test_size])
    cfg = {"task": "dp-cnn", "dp-cnn.dataset": "mnist", "dp-cnn.data-dir": str(out_dir)}
    task = get_task("dp-cnn", cfg)
    uni = Universe(task, x, y, pool, extra, np.sort(order[pool_size + non_members :]))
    return uni, cfg


def wdbc_universe() -> tuple[Universe, dict[str, Any]]:
    """WDBC: the app's 455 training records are the pool, its 114 test records held out.

    569 records leave no disjoint shadow population: shadows draw from all of them.
    """
    cfg = {"task": "breast-cancer"}
    task = get_task("breast-cancer", cfg)
    x_tr, y_tr, x_te, y_te = task.load_arrays()
    x, y = np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])
    n = len(y_tr)
    uni = Universe(task, x, y, np.arange(n), np.arange(n, len(y)), np.arange(len(y)))
    return uni, cfg


def _capture_mod(dest: Path, partition: int, server_round: int) -> Callable[..., Message]:
    """An innermost mod saving ``partition``'s plaintext trained weights in ``server_round``."""

    def capture(msg: Message, context: Context, call_next: Callable[..., Message]) -> Message:
        reply = call_next(msg, context)
        cfg = msg.content.config_records.get("config")
        if (msg.metadata.message_type.startswith("train") and cfg is not None
                and int(cfg["server-round"]) == server_round
                and int(context.node_config["partition-id"]) == partition
                and not reply.has_error()):  # fmt: skip
            state = reply.content.array_records["arrays"].to_torch_state_dict()
            np.savez(dest, **{k: v.numpy() for k, v in state.items()})
        return reply

    return capture


def capturing_clients(dest: Path, server_round: int, partition: int = 0) -> ClientApp:
    """The app's ClientApp with the capture mod innermost (it sees plaintext, pre-HE)."""
    clients = ClientApp(mods=[apps.he_mod, apps.local_dp_mod, apps.tamper_mod,
                              _capture_mod(dest, partition, server_round)])  # fmt: skip
    clients.train()(apps.train)
    clients.evaluate()(apps.evaluate)
    clients.query(SETUP_ACTION)(apps.describe)
    clients.query(SCORES_ACTION)(decrypt_scores)
    return clients


@dataclass
class Target:
    """What one target run yields: both models and what its ledger says."""

    results: dict[str, Any]
    global_model: nn.Module
    client_model: nn.Module
    members_global: np.ndarray
    members_client: np.ndarray
    noise_multiplier: float | None
    epsilon: float | None
    epsilon_alone: float | None


def run_target(uni: Universe, overrides: dict[str, Any], recipe: Recipe) -> Target:
    """One real simulated run; the final global model (decrypted as a key holder if the run
    was server-blind) and client 0's trained weights of the last round."""
    seed = int(overrides.get("seed", 0))
    with tempfile.TemporaryDirectory() as tmp:
        keys, capture = Path(tmp) / "keys", Path(tmp) / "client0.npz"
        cfg = with_dealt_keys(overrides, keys) | {"output-dir": str(Path(tmp) / "out")}
        clients = capturing_clients(capture, recipe.rounds)
        res = simulate(
            cfg, num_supernodes=recipe.clients, num_cpus_per_client=2.0, clients=clients
        )  # one client at a time: two cores are shared
        if res["status"] != "completed":
            raise RuntimeError(f"target run {res['status']}: {res.get('error')}")
        encrypted = res["config"].get("he.backend", "none") != "none"
        _, global_model = final_model(res, recipe.clients, keys if encrypted else None)
        client_model = copy.deepcopy(global_model)  # keeps the federated standardization
        with np.load(capture) as f:
            client_model.load_state_dict({k: torch.as_tensor(v) for k, v in f.items()})
    splits = uni.client_splits(uni.pool, recipe, seed)
    last = res["rounds"][-1]
    release = (last.get("privacy") or {}).get("releases", {}).get("0", {})
    alone = (last.get("train") or {}).get(ALONE_KEY)
    return Target(
        results=res, global_model=global_model, client_model=client_model,
        members_global=np.sort(np.concatenate(splits)), members_client=splits[0],
        noise_multiplier=release.get("dp-noise-multiplier"),
        epsilon=(res.get("privacy") or {}).get("epsilon-max"),
        epsilon_alone=None if alone is None else float(alone),
    )  # fmt: skip


def _train_client(
    task: Task, model: nn.Module, data: TensorDataset, recipe: Recipe, mode: str,
    noise: float | None, clip: float, seed: int,
) -> None:  # fmt: skip
    """One client's local round as the app runs it (``app.dp_client.train_private``)."""
    if mode == "none":
        task.train(model, data, TrainSettings(recipe.epochs, recipe.batch_size, recipe.lr,
                                              seed=seed))  # fmt: skip
        return
    assert noise is not None
    share = noise / math.sqrt(recipe.clients) if mode == "distributed" else noise
    train_dp_sgd(model, data, task.loss_fn(data), DpSgd(noise_multiplier=share, max_grad_norm=clip),
                 epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, seed=seed,
                 max_steps=1 if mode == "distributed" else None)  # fmt: skip


def train_shadow(
    uni: Universe, recipe: Recipe, mode: str, *, noise: float | None, clip: float, seed: int
) -> tuple[nn.Module, nn.Module, np.ndarray]:
    """A shadow federation outside Flower: (global model, client 0's last model, trained idx).

    FedAvg weighted by training-set size (uniform for distributed DP, as the app does).
    """
    rng = np.random.default_rng(seed)
    pool = np.sort(rng.choice(uni.shadow_source, size=len(uni.pool), replace=False))
    splits = uni.client_splits(pool, recipe, seed)
    data = [uni.dataset(s) for s in splits]
    torch.manual_seed(seed)
    model = uni.task.build_model()
    if isinstance(uni.task, TabularTask):
        moments = combine([uni.task.feature_moments(d) for d in data]).mean_std()
        uni.task.set_standardization(model, *moments)
    weights = np.array([1.0 if mode == "distributed" else len(s) for s in splits])
    weights = weights / weights.sum()
    client0 = model
    for r in range(recipe.rounds):
        states = []
        for c, d in enumerate(data):
            local = copy.deepcopy(model)
            _train_client(uni.task, local, d, recipe, mode, noise, clip,
                          seed=seed * 100_003 + r * 101 + c)  # fmt: skip
            states.append(local.state_dict())
            if c == 0:
                client0 = local
        model.load_state_dict({k: sum(w * s[k] for w, s in zip(weights, states, strict=True))
                               for k in states[0]})  # fmt: skip
    return model, client0, np.sort(np.concatenate(splits))


@torch.no_grad()
def logits(model: nn.Module, data: TensorDataset, batch_size: int = 1024) -> np.ndarray:
    """The model's raw outputs on ``data`` (eval mode)."""
    model.eval()
    x = data.tensors[0]
    return np.concatenate([model(x[i : i + batch_size]).numpy()
                           for i in range(0, len(x), batch_size)])  # fmt: skip
