"""The canary data hook of the one-run audit: each partition trains on its own canaries."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from app.canaries import CanaryPlan


def test_plan_adds_only_this_partitions_canaries_after_the_subset() -> None:
    # Prepare
    train = TensorDataset(torch.zeros(10, 3), torch.zeros(10, dtype=torch.int64))
    plan = CanaryPlan(inputs=np.ones((4, 3)), labels=np.array([1, 2, 3, 4]),
                      partitions=np.array([0, 1, 0, 1]), subset=6)  # fmt: skip
    # Execute
    mine = plan.apply(train, 1)
    # Assert: 6 real records, then canaries 1 and 3 with their labels and the data's dtypes
    assert isinstance(mine, TensorDataset)
    x, y = mine.tensors
    assert len(y) == 8 and y[6:].tolist() == [2, 4]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(plan.apply(train, 2)) == 6  # a partition without canaries
