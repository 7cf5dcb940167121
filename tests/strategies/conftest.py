"""Constructed client replies for strategy unit tests."""

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

Replies = Callable[..., list[Message]]


def _replies(updates: list, sizes: list[int], *, nodes: list[int] | None = None) -> list[Message]:
    """One train reply per update (numpy array, or a ready ArrayRecord) from nodes 1..n."""
    replies = []
    for node, u, n in zip(nodes or range(1, len(sizes) + 1), updates, sizes, strict=True):
        sent = Message(RecordDict(), dst_node_id=node, message_type="train")
        arrays = (
            u if isinstance(u, ArrayRecord) else ArrayRecord({"w": Array(u.astype(np.float32))})
        )
        content = RecordDict(
            {"arrays": arrays, "metrics": MetricRecord({"num-examples": n, "loss": float(node)})}
        )
        replies.append(Message(content, reply_to=sent))
    return replies


@pytest.fixture
def make_replies(server_identity: None) -> Replies:
    """Builds replies; needs the server identity a reply's metadata is checked against."""
    return _replies
