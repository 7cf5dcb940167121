"""ServerApp: parse the run config, prepare the model, run the strategy, record results."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from torch import nn

from app.attack import malicious_partitions
from app.config import AppConfig, ConfigError, HeConfig
from app.dp_config import UNIT_WEIGHT_MODES, DpConfig
from app.keys import simulation_keys
from app.metering import MeteredGrid
from app.records import (
    CONFIG,
    EDGE_ID,
    METRICS,
    MOMENTS,
    NUM_EXAMPLES,
    PARTITION_ID,
    SETUP_ACTION,
    STANDARDIZE_MEAN,
    STANDARDIZE_STD,
    UNIT_WEIGHT,
)
from app.results import EvaluateFn, RunRecorder, new_run_dir
from data.preprocess import Moments, combine
from data.threat_csv import MISSING_CATEGORY
from flwr_privacy.dp import planned_noise
from flwr_privacy.he import KeyBundle, keygen, load_bundle
from flwr_privacy.records import as_int
from flwr_privacy.secagg.settings import DistributedDp, SecAggSettings
from flwr_privacy.strategy.budget import BudgetGuard, BudgetsExhausted
from flwr_privacy.strategy.central_dp import LedgeredCentralDp
from flwr_privacy.strategy.encrypted_dp import EncryptedCentralDp
from flwr_privacy.strategy.guard import NoContributionError, StopOnEmptyRounds
from flwr_privacy.strategy.hierarchical import assign_edges
from flwr_privacy.strategy.server_keyed import ServerKeyedModel
from flwr_privacy.strategy.tamper import Tampering
from strategies import make_strategy
from tasks import Task, get_task
from tasks.tabular import TabularTask

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point used by ``flwr run``.

    A failed run (invalid config, ``NoContributionError``, any crash) raises out of
    here after results.json is written, so the ServerApp exits non-zero and the
    SuperLink records the run as ``finished:failed`` with the message (``flwr ls``;
    ``flwr run --stream`` itself still exits 0).
    """
    try:
        run_server(grid, context.run_config, run_id=context.run_id)
    except ConfigError as e:
        log(ERROR, "Invalid run config: %s", e)
        raise


def run_server(grid: Grid, run_config: dict[str, Any], *, run_id: int = 0) -> Path:
    """Run one federated training job; return the path of its results.json."""
    cfg = AppConfig.from_run_config(run_config)  # fails before anything starts
    task = get_task(cfg.task, cfg.task_config)
    _seed_everything(cfg.seed)
    metered = MeteredGrid(grid)
    recorder = RunRecorder(new_run_dir(cfg.output_dir, run_id), run_config, metered)
    log(INFO, "run_server: task=%s strategy=%s he=%s, results in %s",
        cfg.task, cfg.strategy, cfg.he.backend, recorder.run_dir)  # fmt: skip
    status = "completed"
    try:
        with he_keys(cfg.he, eval_keys=cfg.robust.filter != "none") as (bundle, client_bundle):
            _train(cfg, task, metered, recorder, bundle, client_bundle)
    except BudgetsExhausted as e:  # a clean end: every finished round is on disk
        log(WARNING, "run_server: stopping early: %s", e)
        status, recorder.data["stopped"] = "stopped", str(e)
    except NoContributionError as e:  # nothing trained: fail loudly, with each node's reason
        recorder.no_contribution(e)
        recorder.finish("failed", error=f"{type(e).__name__}: {e}")
        log(ERROR, "run_server: run failed, results in %s: %s", recorder.path, e)
        raise
    except BaseException as e:
        path = recorder.finish("failed", error=f"{type(e).__name__}: {e}")
        log(ERROR, "run_server: run failed, results in %s: %s: %s", path, type(e).__name__, e)
        raise
    path = recorder.finish(status)
    final = recorder.data["final"]
    log(
        INFO,
        "run_server: final %s",
        {k: round(v, 4) for k, v in final.items() if isinstance(v, float)},
    )
    log(INFO, "run_server: results written to %s", path)
    return path


def _train(
    cfg: AppConfig,
    task: Task,
    grid: MeteredGrid,
    recorder: RunRecorder,
    bundle: KeyBundle | None,
    client_bundle: str,
) -> None:
    nodes = _wait_for_nodes(grid, cfg.min_clients)
    _check_capacity(task, nodes)
    if dataset := task.describe():
        recorder.data["dataset"] = dataset
        log(INFO, "_train: dataset %s", dataset_summary(dataset))
    client_config = ConfigRecord(cfg.client_config())
    sizes, partitions, declared, moments = describe_nodes(grid, client_config)
    cfg.dp.check_clients(sizes)
    edges = None
    if cfg.hierarchy.enabled:
        try:
            edges = assign_edges(partitions, cfg.hierarchy.edges, declared)
        except ValueError as e:
            raise ConfigError(f"hierarchy.edges = {cfg.hierarchy.edges}: {e}") from e
    recorder.nodes(sizes, partitions, edges)
    bad_nodes: set[int] = set()
    if cfg.attack.active:
        bad = malicious_partitions(cfg.seed, cfg.attack.fraction, len(partitions))
        bad_nodes = {node for node, pid in partitions.items() if pid in bad}
        recorder.attack(cfg.attack.type, cfg.attack.fraction, bad)
        log(WARNING, "_train: ATTACK HARNESS ON: %s by partitions %s (experiments only)",
            cfg.attack.type, sorted(bad))  # fmt: skip
    model = task.build_model()
    standardization = None
    if isinstance(task, TabularTask):
        assert moments is not None  # every tabular client sends its moments (setup query)
        width = int(task.describe()["features"])
        if len(moments.total) != width:
            raise ConfigError(
                f"the nodes' training data encode to {len(moments.total)} features, the "
                f"server's to {width}: {SAME_COLUMNS}"
            )
        mean, std = moments.mean_std()
        task.set_standardization(model, mean.tolist(), std.tolist())
        client_config[STANDARDIZE_MEAN] = mean.tolist()
        client_config[STANDARDIZE_STD] = std.tolist()
        standardization = (mean.tolist(), std.tolist())
    blind = None if cfg.he.server_keyed else bundle  # a key the server cannot decrypt with
    initial = ArrayRecord(model.state_dict())
    recorder.global_model(initial, key=blind, standardization=standardization)
    unit_weights = cfg.dp.mode in UNIT_WEIGHT_MODES
    robust = cfg.robust.robustness(encrypted=blind is not None)
    edge_box, cloud_box = cfg.hierarchy.boxes(robust.box) if edges else (robust.box, None)
    strategy = make_strategy(
        cfg.strategy,
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_nodes=cfg.min_clients,
        num_nodes=nodes,
        proximal_mu=cfg.proximal_mu,
        train_metrics_aggr_fn=recorder.metrics_aggr("train", aggregate_metricrecords),
        evaluate_metrics_aggr_fn=recorder.metrics_aggr("evaluate", aggregate_metricrecords),
        on_reject=recorder.reject,
        he=None if blind is None else cfg.he.settings(client_bundle=client_bundle, seed=cfg.seed),
        he_bundle=blind,
        num_examples=None if unit_weights else sizes,
        min_contributions=cfg.min_clients if cfg.dp.mode == "distributed" else 1,
        robust=replace(robust, box=edge_box),
        on_filter=recorder.filtered,
        edges=edges,
        cloud_box=cloud_box,
        on_tiers=recorder.tiers,
        weighted_by_key=UNIT_WEIGHT if unit_weights else NUM_EXAMPLES,
        secagg=secagg_settings(cfg, sizes) if cfg.secagg.enabled else None,
        on_secagg=recorder.secagg,
        secagg_groups=cfg.secagg.group_filter(cfg.robust, cfg.num_server_rounds),
    )
    if bad_nodes:  # experiments only: the chosen nodes' tamper_mod misbehaves
        strategy = Tampering(strategy, attack=cfg.attack.tamper(), nodes=bad_nodes)
    if cfg.he.server_keyed:
        assert bundle is not None  # he_keys makes the server's own key pair for server-keyed HE
        strategy = ServerKeyedModel(strategy, bundle=bundle, on_reject=recorder.reject)
    strategy = guarded(with_privacy(strategy, cfg, recorder, nodes), cfg, recorder)
    central = None
    if blind is None:
        central = central_evaluation(task, model)
    else:
        log(INFO, "_train: the server holds ciphertexts only; evaluation is federated")
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=cfg.num_server_rounds,
        train_config=client_config,
        evaluate_config=ConfigRecord(dict(client_config)),
        evaluate_fn=recorder.evaluate_fn(central),
        timeout=cfg.round_timeout,
    )


def secagg_settings(cfg: AppConfig, sizes: dict[int, int]) -> SecAggSettings:
    """SecAgg+ settings; with ``dp.mode = 'distributed'`` the discrete Gaussian plan's inputs.

    One DP-SGD step a round: one example moves a client's update by ``lr C / B``; the
    largest Poisson sample rate of any client is accounted (each client records its own).
    """
    dp = None
    if cfg.dp.mode == "distributed":
        dp = DistributedDp.for_dp_sgd(
            cfg.dp.epsilon, cfg.dp.delta, cfg.num_server_rounds, lr=cfg.learning_rate,
            batch_size=cfg.batch_size, min_examples=min(sizes.values()),
            max_grad_norm=cfg.dp.max_grad_norm,
        )
    return cfg.secagg.settings(timeout=cfg.round_timeout, dp=dp)


def guarded(strategy: Strategy, cfg: AppConfig, recorder: RunRecorder) -> StopOnEmptyRounds:
    """Fail the run after ``max-empty-rounds`` rounds in a row that no client contributed to."""
    return StopOnEmptyRounds(strategy, cfg.max_empty_rounds, rejections=recorder.rejections)


def with_privacy(strategy: Any, cfg: AppConfig, recorder: RunRecorder, nodes: int) -> Any:
    """Wrap the strategy in central DP (noise on the aggregate) or the client-DP layer.

    Both write the run's DP settings as the ``flwr-privacy.dp`` record on every message
    (mode ``none`` when DP is off), which is all the clients' DP code reads.
    """
    dp: DpConfig = cfg.dp
    recorder.privacy_setup(dp)
    if dp.mode != "central":
        return BudgetGuard(strategy, dp=dp, on_decline=recorder.declined)
    z = dp.noise_multiplier or planned_noise(
        target_epsilon=dp.epsilon, delta=dp.delta, sample_rate=1.0,
        steps=cfg.num_server_rounds, accountant=dp.accountant,
    )  # fmt: skip
    if cfg.he.enabled and not cfg.he.server_keyed:  # the server is blind: noise ciphertexts
        log(INFO, "with_privacy: central DP on the encrypted sum, noise multiplier %.3f, "
            "clip %.3g (clients clip)", z, dp.max_grad_norm)  # fmt: skip
        return EncryptedCentralDp(strategy, dp=replace(dp, noise_multiplier=z),
                                  on_release=recorder.central_release)  # fmt: skip
    sampled = max(int(nodes * cfg.fraction_train), cfg.min_clients)
    log(INFO, "with_privacy: central DP, noise multiplier %.3f, clip %.3g, %d clients a round",
        z, dp.max_grad_norm, sampled)  # fmt: skip
    return LedgeredCentralDp(
        strategy, z, dp.max_grad_norm, sampled, dp=replace(dp, noise_multiplier=z),
        on_release=recorder.central_release,
    )  # fmt: skip


@contextmanager
def he_keys(he: HeConfig, *, eval_keys: bool = False) -> Iterator[tuple[KeyBundle | None, str]]:
    """The server's bundle and the client bundle's path simulated clients load ("" if none).

    Server-keyed mode (encrypted-model training): the server makes and keeps
    the key pair; clients need none. Otherwise (server-blind) the server's
    bundle is public-only:

    Deployment: ``he.server-bundle`` names the dealer's server bundle; SuperNodes
    hold the client bundle via node config (``he.client-bundle`` only serves
    simulations that bring their own keys). Simulation: a dealer process makes
    per-run keys in a private temp dir and the server loads only the server bundle.
    ``eval_keys`` (encrypted box plot) asks for relinearization/Galois keys.
    """
    if not he.enabled:
        yield None, ""
    elif he.server_keyed:  # the server is the key owner; clients get no key at all
        bundle = keygen(he.backend, he.key_params())
        log(INFO, "he_keys: server-keyed %s keys %s (held by the server)",
            he.backend, bundle.fingerprint)  # fmt: skip
        yield bundle, ""
    elif he.server_bundle:
        bundle = load_bundle(he.server_bundle, expect_private=False)
        if bundle.backend != he.backend:
            raise ConfigError(
                f"he.server-bundle is a {bundle.backend} bundle but he.backend = {he.backend!r}"
            )
        if eval_keys and bundle.evaluation is None:
            raise ConfigError(
                "he.server-bundle has no evaluation keys, which robust.filter needs; generate "
                "keys with: python -m app.keys generate --backend ckks --eval-keys "
                "--coeff-mod-bit-sizes 60,40,40,60"
            )
        # Simulation with keys of your own: the path simulated clients load.
        yield bundle, he.client_bundle
    else:
        with simulation_keys(he.backend, he.key_params(eval_keys=eval_keys)) as (
            bundle,
            client_path,
        ):
            log(
                INFO,
                "he_keys: per-run %s keys %s (simulation dealer)",
                he.backend,
                bundle.fingerprint,
            )
            yield bundle, str(client_path)


def _seed_everything(seed: int) -> None:
    """Seed the server's model init and Flower's node sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _wait_for_nodes(grid: Grid, minimum: int, poll: float = 1.0) -> int:
    while len(nodes := list(grid.get_node_ids())) < minimum:
        log(INFO, "_wait_for_nodes: %d of at least %d nodes connected", len(nodes), minimum)
        time.sleep(poll)
    return len(nodes)


def _check_capacity(task: Task, num_nodes: int) -> None:
    """Each client needs two training samples: one to train on, one to validate on."""
    n = task.num_train_samples()
    if 2 * num_nodes > n:
        raise ConfigError(
            f"{num_nodes} clients (the federation's num-supernodes) is too many for "
            f"task '{task.name}' with {n} training samples; allowed: at most {n // 2} clients"
        )


def dataset_summary(dataset: dict[str, Any]) -> str:
    """One log line of ``Task.describe()``: rows, features and classes with training counts."""
    rows, classes = dataset["rows"], dataset.get("classes", {})
    parts = [f"{dataset.get('source', 'data')}: {rows['train']} training / {rows['test']} test "
             f"records, {dataset['features']} features"]  # fmt: skip
    if "numeric-columns" in dataset:
        parts.append(
            f"({dataset['numeric-columns']} numeric, {len(dataset['log1p-columns'])} "
            f"through log1p, {len(dataset['text-columns'])} text columns one-hot)"
        )
    filled = [
        f"{e['cells']} in {c!r} with {e['median']:g}" if "median" in e
        else f"{e['cells']} in {c!r} with '{MISSING_CATEGORY}'"
        for c, e in dataset.get("imputed", {}).items()
    ]  # fmt: skip
    if filled:
        parts.append("; bad cells filled: " + ", ".join(filled))
    counts = ", ".join(f"{name} {c['train']}" for name, c in classes.items())
    return (
        " ".join(parts).replace(" ;", ";")
        + f"; {len(classes)} classes (training records): {counts}"
    )


def describe_nodes(
    grid: Grid, config: ConfigRecord
) -> tuple[dict[int, int], dict[int, int], dict[int, int], Moments | None]:
    """Ask every node for its partition id, edge, training-set size and (tabular) feature moments.

    Reveals each client's training-set size and, for tabular tasks, its feature
    sums and sums of squares to the server. Nodes that fail are logged and left out.
    Returns sizes, partition ids and declared edge ids (node config ``edge-id``)
    by node id, and the combined moments.
    """
    record = RecordDict({CONFIG: config})
    kind = f"{MessageType.QUERY}.{SETUP_ACTION}"
    messages = [
        Message(content=record, message_type=kind, dst_node_id=n) for n in grid.get_node_ids()
    ]
    sizes: dict[int, int] = {}
    partitions: dict[int, int] = {}
    declared: dict[int, int] = {}
    parts: dict[int, Moments] = {}
    failed: dict[int, str] = {}
    for reply in grid.send_and_receive(messages):
        node = reply.metadata.src_node_id
        if reply.has_error():
            failed[node] = str(reply.error.reason)
            log(WARNING, "describe_nodes: node %d failed: %s", node, reply.error.reason)
            continue
        metrics = reply.content.metric_records[METRICS]
        sizes[node] = as_int(metrics[NUM_EXAMPLES])
        partitions[node] = as_int(metrics[PARTITION_ID])
        if EDGE_ID in metrics:
            declared[node] = as_int(metrics[EDGE_ID])
        if MOMENTS in reply.content.array_records:
            arrays = reply.content.array_records[MOMENTS]
            parts[node] = Moments(sizes[node], arrays["total"].numpy(), arrays["total-sq"].numpy())
    if not sizes:
        first = next(iter(failed.items()), None)
        raise RuntimeError(
            "describe_nodes: no node answered the setup query"
            + (f"; node {first[0]}: {first[1]}" if first else "")
        )
    log(INFO, "describe_nodes: %d nodes, %d training examples", len(sizes), sum(sizes.values()))
    return sizes, partitions, declared, combine(_same_width(parts)) if parts else None


SAME_COLUMNS = (
    "every node and the server must read training data with the same columns and, for text "
    "columns, the same categories (for the threat task's CSVs: the same training file, each "
    "node taking its partition)"
)


def _same_width(parts: dict[int, Moments]) -> list[Moments]:
    """Every node must see the same features, or no model fits them all."""
    widths = {node: len(m.total) for node, m in parts.items()}
    if len(set(widths.values())) > 1:
        raise ConfigError(
            f"the nodes' training data encode to different numbers of features {widths} "
            f"(node id -> features): {SAME_COLUMNS}"
        )
    return list(parts.values())


def central_evaluation(task: Task, model: nn.Module) -> EvaluateFn:
    """Evaluate the global model on the task's held-out test set on the server."""
    test = task.load_test()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord(task.evaluate(model, test))

    return evaluate
