"""Traffic counting names the node behind a failure, also when the SuperLink answers for it."""

from collections.abc import Iterable

import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

from app.metering import MeteredGrid

pytestmark = pytest.mark.usefixtures("server_identity")


class _Link:
    """Stands in for Flower's grid: node 7 answers, node 42 stopped sending heartbeats."""

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id  # as pushing does
            if msg.metadata.dst_node_id == 42:  # what the SuperLink itself replies
                replies.append(create_message_error_unavailable_res_message(msg.metadata, "node"))
            else:
                content = RecordDict({"m": MetricRecord({"num-examples": 3})})
                replies.append(Message(content, reply_to=msg))
        return replies


def test_node_unavailable_failure_names_the_silent_node() -> None:
    # Prepare
    grid = MeteredGrid(_Link())  # type: ignore[arg-type]
    content = RecordDict({"arrays": ArrayRecord()})
    messages = [Message(content, dst_node_id=n, message_type="train") for n in (7, 42)]
    # Execute
    replies = list(grid.send_and_receive(messages))
    # Assert
    assert replies[1].metadata.src_node_id != 42  # the SuperLink's own node id
    (failure,) = grid.take().errors
    assert failure["node-id"] == 42
    assert "Node Unavailable" in str(failure["reason"])
