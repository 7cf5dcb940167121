"""A ClientApp that trains on canaries too: the data hook of the one-run DP audit
(``benchmarks/dp_audit.py``, ``flwr_privacy.attacks.audit``). Experiments only.

The auditor decides which canaries are included (fair coins) and gives each
included one to a partition; this app adds them to that partition's training
split, and optionally keeps only the first ``subset`` real training records of
every client (a smaller, faster federation that memorizes more; image tasks: a
tabular task's standardization would still come from the whole split). Everything else
is the app's own ClientApp: the same mods (HE, local DP, tampering), the same
DP training, evaluation on the untouched validation split, and the setup query
answered without canaries, so the feature moments (tabular standardization),
which no DP mode covers, carry nothing about them: the audit measures training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from torch.utils.data import Dataset, Subset, TensorDataset

from app.client_app import he_mod
from app.client_handlers import describe, evaluate, partition, setup, train_on
from app.records import ARRAYS, CONFIG, SETUP_ACTION
from flwr_privacy.he.protocol import SCORES_ACTION
from flwr_privacy.mods.he import decrypt_scores
from flwr_privacy.mods.local_dp import local_dp_mod
from flwr_privacy.mods.tamper import tamper_mod
from flwr_privacy.records import as_int
from flwr_privacy.sizes import dataset_size
from tasks import ClientData


@dataclass(frozen=True)
class CanaryPlan:
    """The included canaries, as the task's training dataset yields records, and where they go.

    ``inputs[i]``, ``labels[i]`` go to partition ``partitions[i]``; ``subset`` > 0
    keeps only that many real training records per client. ``record_dir``: partition
    0 saves every global model it receives there (``round-<r>.pt``), as any client
    sees them: the audit may score canaries on all released models, not only the last.
    """

    inputs: np.ndarray
    labels: np.ndarray
    partitions: np.ndarray
    subset: int = 0
    record_dir: str = ""

    def record(self, msg: Message, partition_id: int) -> None:
        """Save the global model this round's message carries (partition 0 only)."""
        if not self.record_dir or partition_id != 0:
            return
        path = Path(self.record_dir) / f"round-{as_int(msg.content[CONFIG]['server-round'])}.pt"
        torch.save(msg.content.array_records[ARRAYS].to_torch_state_dict(), path)

    def apply(self, train: Dataset, partition_id: int) -> Dataset:
        """``train`` (its first ``subset`` records) plus this partition's canaries."""
        if self.subset > 0 and dataset_size(train) > self.subset:
            train = _take(train, self.subset)
        mine = self.partitions == partition_id
        if not mine.any():
            return train
        if not isinstance(train, TensorDataset):
            raise TypeError(f"canaries need a TensorDataset, not {type(train).__name__}")
        x, y = train.tensors
        cx = torch.as_tensor(self.inputs[mine], dtype=x.dtype)
        cy = torch.as_tensor(self.labels[mine], dtype=y.dtype)
        return TensorDataset(torch.cat([x, cx]), torch.cat([y, cy]))


def _take(data: Dataset, n: int) -> Dataset:
    if isinstance(data, TensorDataset):
        return TensorDataset(*(t[:n] for t in data.tensors))
    return Subset(data, range(n))


def make_canary_app(plan: CanaryPlan) -> ClientApp:
    """The app's ClientApp whose training splits hold ``plan``'s canaries."""
    app = ClientApp(mods=[he_mod, local_dp_mod, tamper_mod])
    app.query(SCORES_ACTION)(decrypt_scores)
    app.evaluate()(evaluate)

    # The setup query reports the real split (its full size: round 1 weighs clients by it,
    # later rounds by what training replies report) and never sees the canaries.
    app.query(SETUP_ACTION)(describe)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        """``app.client_handlers.train`` on the partition plus its canaries."""
        task, settings, data = setup(msg, context)
        partition_id = partition(context)[0]
        plan.record(msg, partition_id)
        data = ClientData(train=plan.apply(data.train, partition_id), val=data.val)
        return train_on(msg, context, task, settings, data)

    return app
