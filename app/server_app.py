"""ServerApp: parse the run config, prepare the model, run the strategy, record results."""

from __future__ import annotations

import random
import time
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
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from torch import nn

from app.config import AppConfig, ConfigError
from app.metering import MeteredGrid
from app.records import CONFIG, METRICS, MOMENTS, MOMENTS_ACTION, NUM_EXAMPLES
from app.results import EvaluateFn, RunRecorder, new_run_dir
from data.preprocess import Moments, combine
from strategies import make_strategy
from tasks import Task, get_task
from tasks.tabular import TabularTask

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point used by ``flwr run``."""
    try:
        run_server(grid, context.run_config, run_id=context.run_id)
    except ConfigError as e:
        log(ERROR, "Invalid run config: %s", e)
        raise


def run_server(grid: Grid, run_config: dict[str, Any], *, run_id: int = 0) -> Path:
    """Run one federated training job; return the path of its results.json."""
    cfg = AppConfig.from_run_config(run_config)  # fails before anything starts
    task = get_task(cfg.task)
    _seed_everything(cfg.seed)
    metered = MeteredGrid(grid)
    recorder = RunRecorder(new_run_dir(cfg.output_dir, run_id), run_config, metered)
    log(
        INFO,
        "run_server: task=%s strategy=%s, results in %s",
        cfg.task,
        cfg.strategy,
        recorder.run_dir,
    )
    try:
        num_nodes = _wait_for_nodes(metered, cfg.min_clients)
        _check_capacity(task, num_nodes)
        model = task.build_model()
        if isinstance(task, TabularTask):
            task.set_feature_moments(model, collect_moments(metered, cfg))
        strategy = make_strategy(
            cfg.strategy,
            fraction_train=cfg.fraction_train,
            fraction_evaluate=cfg.fraction_evaluate,
            min_nodes=cfg.min_clients,
            proximal_mu=cfg.proximal_mu,
            train_metrics_aggr_fn=recorder.metrics_aggr("train", aggregate_metricrecords),
            evaluate_metrics_aggr_fn=recorder.metrics_aggr("evaluate", aggregate_metricrecords),
            on_reject=recorder.reject,
        )
        strategy.start(
            grid=metered,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=cfg.num_server_rounds,
            train_config=ConfigRecord(cfg.client_config()),
            evaluate_config=ConfigRecord(cfg.client_config()),
            evaluate_fn=recorder.evaluate_fn(central_evaluation(task, model)),
        )
    except BaseException as e:
        recorder.finish("failed", error=f"{type(e).__name__}: {e}")
        raise
    path = recorder.finish()
    final = recorder.data["final"]
    log(
        INFO,
        "run_server: final %s",
        {k: round(v, 4) for k, v in final.items() if isinstance(v, float)},
    )
    log(INFO, "run_server: results written to %s", path)
    return path


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


def collect_moments(grid: Grid, cfg: AppConfig) -> Moments:
    """Ask every node for its training-split feature moments and sum them.

    Reveals per-client feature sums and sums of squares to the server; nodes
    that fail are logged and left out.
    """
    record = RecordDict({CONFIG: ConfigRecord(cfg.client_config())})
    messages = [
        Message(content=record, message_type=f"{MessageType.QUERY}.{MOMENTS_ACTION}", dst_node_id=n)
        for n in grid.get_node_ids()
    ]
    parts = []
    for reply in grid.send_and_receive(messages):
        if reply.has_error():
            log(
                WARNING,
                "collect_moments: node %d failed: %s",
                reply.metadata.src_node_id,
                reply.error.reason,
            )
            continue
        arrays = reply.content[MOMENTS]
        parts.append(
            Moments(
                count=int(reply.content[METRICS][NUM_EXAMPLES]),
                total=arrays["total"].numpy(),
                total_sq=arrays["total-sq"].numpy(),
            )
        )
    if not parts:
        raise RuntimeError("collect_moments: no node returned feature moments")
    log(INFO, "collect_moments: standardization fitted on %d nodes' training splits", len(parts))
    return combine(parts)


def central_evaluation(task: Task, model: nn.Module) -> EvaluateFn:
    """Evaluate the global model on the task's held-out test set on the server."""
    test = task.load_test()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord(task.evaluate(model, test))

    return evaluate
