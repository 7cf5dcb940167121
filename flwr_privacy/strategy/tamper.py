"""The server side of the attack harness (experiments only): which nodes misbehave, and how."""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flwr_privacy.mods.tamper import Tamper
from flwr_privacy.records import TAMPER_RECORD
from flwr_privacy.strategy.wrapper import StrategyWrapper

__all__ = ["Tampering"]


class Tampering(StrategyWrapper):
    """Tell ``nodes`` to misbehave as ``attack`` (their ``tamper_mod`` does it).

    Parameters
    ----------
    inner : Strategy
        The strategy under test.
    attack : Tamper
        The behaviour of every malicious node.
    nodes : iterable of int
        Node ids of the malicious nodes.
    """

    def __init__(self, inner: Strategy, *, attack: Tamper, nodes: Iterable[int]) -> None:
        super().__init__(inner)
        self.attack = attack
        self.nodes = frozenset(nodes)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        out = []
        for msg in self.inner.configure_train(server_round, arrays, config, grid):
            node = msg.metadata.dst_node_id
            if node in self.nodes:  # messages share one RecordDict: give this one its own
                content = RecordDict(dict(msg.content.items()))
                content[TAMPER_RECORD] = self.attack.to_record(server_round)
                msg = Message(content, dst_node_id=node, message_type=msg.metadata.message_type)
            out.append(msg)
        return out

    def summary(self) -> None:
        log(INFO, "\t├──> ATTACK HARNESS: %s by %d nodes (experiments only)",
            self.attack.kind, len(self.nodes))  # fmt: skip
        self.inner.summary()
