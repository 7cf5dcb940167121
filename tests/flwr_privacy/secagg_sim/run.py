"""A minimal outside-style Flower app under SecAgg+, run through the real simulation engine.

``python -m tests.flwr_privacy.secagg_sim.run <out.json> <json options>`` (a separate process:
each run starts its own Ray cluster). Clients return ``global + delta(partition)`` with
``10 * (partition + 1)`` examples, so the expected FedAvg is known in closed form. Options:
``nodes``, ``rounds``, ``threshold``, ``neighbours``, ``drop`` ({stage: [partitions]}: those
clients fail at that stage), ``groups`` (number of groups by partition).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from flwr_privacy import SecAggPlus, SecAggSettings, secagg_mod
from flwr_privacy.records import SECAGG_RECORD
from flwr_privacy.secagg.identity import NODE_KEY, NODE_ROSTER, ROSTER_FILE, make_roster

SHAPES = {"w": (3, 4), "b": (4,)}


def delta(pid: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(pid)
    return {k: rng.uniform(-1, 1, size=s).astype(np.float32) for k, s in SHAPES.items()}


def main(out: Path, opts: dict[str, Any]) -> None:
    nodes, rounds = int(opts.get("nodes", 4)), int(opts.get("rounds", 2))
    drop: dict[str, list[int]] = opts.get("drop", {})
    report: dict[str, Any] = {"rounds": {}}

    def dropper(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        pid = int(context.node_config["partition-id"])
        record = msg.content.config_records.get(SECAGG_RECORD) if msg.has_content() else None
        stage = record.get("stage") if record is not None else None
        if stage is not None and pid in drop.get(str(stage), []):
            return Message(Error(code=1, reason=f"partition {pid} drops at {stage}"), reply_to=msg)
        return call_next(msg, context)

    # The operator's trust anchor, as each SuperNode's node config would carry it: a roster made
    # before the run and every client's own key (run_simulation sets no per-node config).
    roster_dir = out.parent / "roster"
    make_roster([f"client-{p}" for p in range(nodes)], roster_dir)

    def node_keys(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        pid = int(context.node_config["partition-id"])
        context.node_config[NODE_KEY] = str(roster_dir / f"client-{pid}.key")
        context.node_config[NODE_ROSTER] = str(roster_dir / ROSTER_FILE)
        return call_next(msg, context)

    client = ClientApp(mods=[dropper, node_keys, secagg_mod])

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        arrays = msg.content.array_records["arrays"]
        new = {k: arrays[k].numpy() + delta(pid)[k] for k in SHAPES}
        metrics = MetricRecord({"num-examples": 10 * (pid + 1), "pid": pid})
        content = RecordDict(
            {"arrays": ArrayRecord({k: Array(v) for k, v in new.items()}), "metrics": metrics}
        )
        return Message(content, reply_to=msg)

    @client.query()
    def query(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        return Message(RecordDict({"metrics": MetricRecord({"pid": pid})}), reply_to=msg)

    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        groups = int(opts.get("groups", 0))
        while len(list(grid.get_node_ids())) < nodes:  # nodes register asynchronously
            time.sleep(0.1)
        partitions = {}
        if groups:  # ask every node its partition: groups by partition, as the test expects
            asks = [
                Message(RecordDict(), dst_node_id=n, message_type="query")
                for n in grid.get_node_ids()
            ]
            for reply in grid.send_and_receive(asks):
                partitions[reply.metadata.src_node_id] = int(reply.content["metrics"]["pid"])
        strategy = SecAggPlus(
            FedAvg(
                fraction_train=1.0,
                fraction_evaluate=0.0,
                min_available_nodes=nodes,
                min_train_nodes=nodes,  # all: the sample size is read before every node registers
            ),
            secagg=SecAggSettings(
                threshold=opts.get("threshold", 0.5), neighbours=int(opts.get("neighbours", 0))
            ),
            num_examples={0: 10 * nodes},
            groups={n: pid % groups for n, pid in partitions.items()} if groups else None,
            on_round=lambda r, rep: report["rounds"].__setitem__(str(r), rep),
        )
        start = ArrayRecord({k: Array(np.zeros(s, np.float32)) for k, s in SHAPES.items()})
        result = strategy.start(grid=grid, initial_arrays=start, num_rounds=rounds)
        final = result.arrays
        report["final"] = {k: final[k].numpy().tolist() for k in SHAPES}
        report["train-metrics"] = {
            str(r): dict(m) for r, m in result.train_metrics_clientapp.items()
        }

    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=nodes,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"logging_level": "ERROR"},
        },
    )
    out.write_text(json.dumps(report, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
