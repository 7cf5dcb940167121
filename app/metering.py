"""A Grid wrapper that counts what crosses the wire, for any strategy.

Sizes are the protobuf-serialized message contents (what Flower ships), so
encrypted payloads added later are measured the same way as plain arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message
from flwr.common.serde import recorddict_to_proto
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.supercore.run import Run


def content_bytes(message: Message) -> int:
    """Serialized size of a message's content (0 for error replies)."""
    if not message.has_content():
        return 0
    return recorddict_to_proto(message.content).ByteSize()


@dataclass
class Traffic:
    """Counters since the last ``take()``: bytes and messages each way, failures."""

    bytes_down: int = 0
    bytes_up: int = 0
    messages_down: int = 0
    messages_up: int = 0
    errors: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "bytes-down": self.bytes_down,
            "bytes-up": self.bytes_up,
            "messages-down": self.messages_down,
            "messages-up": self.messages_up,
            "failures": list(self.errors),
        }


class MeteredGrid(Grid):
    """Delegates to an inner Grid and counts each message it sends and receives."""

    def __init__(self, inner: Grid) -> None:
        self._inner = inner
        self.traffic = Traffic()

    def take(self) -> Traffic:
        """Return the counters so far and start new ones."""
        out, self.traffic = self.traffic, Traffic()
        return out

    def _count_out(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self.traffic.messages_down += len(messages)
        self.traffic.bytes_down += sum(content_bytes(m) for m in messages)
        return messages

    def _count_in(
        self, replies: Iterable[Message], destinations: dict[str, int] | None = None
    ) -> list[Message]:
        """Count replies; an error names the node the instruction went to.

        Errors the SuperLink makes itself (e.g. "Node Unavailable" for a node
        that stopped sending heartbeats) come from the SuperLink's own node id,
        so ``destinations`` (message id -> destination node) recovers the node.
        """
        replies = list(replies)
        self.traffic.messages_up += len(replies)
        for reply in replies:
            self.traffic.bytes_up += content_bytes(reply)
            if reply.has_error():
                meta = reply.metadata
                node = (destinations or {}).get(meta.reply_to_message_id, meta.src_node_id)
                self.traffic.errors.append({"node-id": node, "reason": reply.error.reason})
        return replies

    # Grid interface -------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._inner.set_run(run)

    @property
    def run(self) -> Run:
        return self._inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self._inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._inner.push_messages(self._count_out(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._count_in(self._inner.pull_messages(message_ids))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        out = self._count_out(messages)
        replies = self._inner.send_and_receive(out, timeout=timeout)
        # Pushing set each message's id.
        return self._count_in(replies, {m.metadata.message_id: m.metadata.dst_node_id for m in out})
