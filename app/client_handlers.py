"""The ClientApp's work: load this node's partition, then train, evaluate or describe.

Split from ``app/client_app.py`` so that a process answering only a protocol stage
(SecAgg+ keys, shares, unmasking: five of a round's six messages) never imports
torch or the task code. In a deployment Flower 1.41 starts a fresh ClientApp process
for every message, so those imports were paid about 2 s of CPU per stage.

Everything it needs arrives in the message's ConfigRecord (the server parsed
the run config once); the partition comes from the node config.
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from torch import nn
from torch.utils.data import TensorDataset

from app.attack import poison
from app.config import ClientSettings
from app.dp_client import train_private
from app.records import (
    ARRAYS,
    CONFIG,
    EDGE_ID,
    METRICS,
    MOMENTS,
    NUM_EXAMPLES,
    PARTITION_ID,
    STANDARDIZE_MEAN,
    STANDARDIZE_STD,
    UNIT_WEIGHT,
)
from flwr_privacy.dp import BudgetExhausted, declined, dp_settings
from flwr_privacy.records import as_floats
from flwr_privacy.sizes import dataset_size
from tasks import ClientData, Task, get_task
from tasks.tabular import TabularTask


def partition(context: Context) -> tuple[int, int]:
    try:
        return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    except KeyError as e:
        raise ValueError(
            f"node config lacks {e}; start the SuperNode with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        ) from e


def setup(msg: Message, context: Context) -> tuple[Task, ClientSettings, ClientData]:
    partition_id, num_partitions = partition(context)
    settings = ClientSettings.from_message_config(
        msg.content[CONFIG], partition_id=partition_id, node_config=context.node_config
    )
    task = get_task(settings.task, settings.task_config)
    data = task.load_partition(partition_id, num_partitions, settings.spec)
    return (
        task,
        settings,
        poison(data, task.num_classes, msg),
    )


def _model(task: Task, msg: Message, *, load: bool = True) -> nn.Module:
    """The task's model with the run's standardization; the global weights if ``load``."""
    model = task.build_model()
    if load:
        model.load_state_dict(msg.content.array_records[ARRAYS].to_torch_state_dict())
    if isinstance(task, TabularTask):
        cfg = msg.content.config_records[CONFIG]
        mean, std = as_floats(cfg[STANDARDIZE_MEAN]), as_floats(cfg[STANDARDIZE_STD])
        task.set_standardization(model, mean, std)
    return model


def _reply(
    msg: Message,
    metrics: Mapping[str, float],
    num_examples: int,
    arrays: dict[str, ArrayRecord] | None = None,
) -> Message:
    dp = dp_settings(msg)  # central / distributed DP: the server averages clients uniformly
    extra = {UNIT_WEIGHT: 1} if dp is not None and dp.unit_weights else {}
    metric_record = MetricRecord({**metrics, NUM_EXAMPLES: num_examples, **extra})
    content = RecordDict({**(arrays or {}), METRICS: metric_record})
    return Message(content=content, reply_to=msg)


def train(msg: Message, context: Context) -> Message:
    """Train the received global model on the local training split."""
    task, settings, data = setup(msg, context)
    return train_on(msg, context, task, settings, data)


def train_on(
    msg: Message, context: Context, task: Task, settings: ClientSettings, data: ClientData
) -> Message:
    """The train reply on ``data``: plain, client-DP or server-keyed, as the message asks.

    Split from ``train`` so an experiment can train on other data with the same
    code path (``app/canaries.py`` adds the DP audit's canaries).
    """
    if msg.content[CONFIG].get("he.mode") == "server-keyed":  # docs/guides/he-server-keyed.md
        return _train_encrypted(msg, task, settings, data)
    model = _model(task, msg)
    dp = dp_settings(msg)  # the record of the server's BudgetGuard
    pinned = context.node_config.get("dp-mode")  # the operator's word, not the server's
    if pinned is not None and (dp is None or dp.mode != pinned):
        asked = dp.mode if dp else "no DP"
        return declined(msg, f"this SuperNode's node config pins dp-mode = {pinned!r}, but the "
                             f"server asks for {asked!r}: refused")  # fmt: skip
    if dp is not None and dp.on_clients:  # client-side DP (docs/guides/dp.md)
        try:
            metrics = train_private(task, model, data, settings.train, msg, context, dp)
        except BudgetExhausted as e:
            return declined(msg, e)
        metrics[PARTITION_ID] = partition(context)[0]
    else:
        metrics = task.train(model, data.train, settings.train)
    return _reply(msg, metrics, dataset_size(data.train), {ARRAYS: ArrayRecord(model.state_dict())})


def _train_encrypted(
    msg: Message, task: Task, settings: ClientSettings, data: ClientData
) -> Message:
    """Update the encrypted global model [[w]] without reading it; reply [[w']]."""
    # Server-keyed runs only: keeps TenSEAL/phe out of every other ClientApp process.
    from app.encrypted_training import NotAffineError, train_encrypted
    from flwr_privacy.he import PayloadError

    model = _model(task, msg, load=False)  # the weights are ciphertexts
    try:
        arrays, metrics = train_encrypted(
            model, lambda m: task.train(m, data.train, settings.train),
            msg.content.array_records[ARRAYS],
            seed=settings.train.seed,
        )  # fmt: skip
    except (PayloadError, NotAffineError) as e:
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                             reason=f"server-keyed training: {e}"), reply_to=msg)  # fmt: skip
    return _reply(msg, metrics, dataset_size(data.train), {ARRAYS: arrays})


def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the local validation split."""
    task, _, data = setup(msg, context)
    metrics = task.evaluate(_model(task, msg), data.val)
    return _reply(msg, {k: metrics[k] for k in task.metric_names}, dataset_size(data.val))


def describe(msg: Message, context: Context) -> Message:
    """Partition id, declared edge, training-set size and, for tabular tasks, feature moments."""
    task, _, data = setup(msg, context)
    info = {PARTITION_ID: partition(context)[0]}
    if EDGE_ID in context.node_config:
        info[EDGE_ID] = int(context.node_config[EDGE_ID])
    if not isinstance(task, TabularTask):
        return _reply(msg, info, dataset_size(data.train))
    if not isinstance(data.train, TensorDataset):
        raise TypeError(f"{task.name} loads {type(data.train).__name__}, not a TensorDataset")
    m = task.feature_moments(data.train)
    arrays = ArrayRecord({"total": Array(m.total), "total-sq": Array(m.total_sq)})
    return _reply(msg, info, m.count, {MOMENTS: arrays})
