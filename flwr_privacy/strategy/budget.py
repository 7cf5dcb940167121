"""Privacy budgets on the server: skip clients that declined, stop when too few remain.

A DP client whose next round would exceed its epsilon budget declines with a
``BUDGET_EXHAUSTED`` error reply. This wrapper (it holds the strategy, as
Flower's DP wrappers do) stops sampling such nodes and, once fewer than the
strategy's ``min_train_nodes`` are left, raises ``BudgetsExhausted`` before the
next round starts, so the ServerApp ends the run cleanly with every finished
round already on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from flwr_privacy.dp import BUDGET_EXHAUSTED

DeclineFn = Callable[[int, int, str], None]  # (server round, node id, reason)


class BudgetsExhausted(RuntimeError):
    """Too few clients have privacy budget left to run another round."""


class BudgetGuard(Strategy):
    """Wrap a FedAvg-family strategy; nodes that declined for budget are not asked again."""

    def __init__(self, strategy: FedAvg, *, on_decline: DeclineFn | None = None) -> None:
        self.strategy = strategy
        self.on_decline = on_decline
        self.exhausted: set[int] = set()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        left = set(grid.get_node_ids()) - self.exhausted
        if self.exhausted and len(left) < self.strategy.min_train_nodes:
            raise BudgetsExhausted(
                f"{len(self.exhausted)} clients exhausted their privacy budget; {len(left)} "
                f"left, fewer than min-clients = {self.strategy.min_train_nodes}"
            )
        messages = self.strategy.configure_train(server_round, arrays, config, grid)
        return [m for m in messages if m.metadata.dst_node_id not in self.exhausted]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for reply in replies:
            if reply.has_error() and reply.error.code == BUDGET_EXHAUSTED:
                node = reply.metadata.src_node_id
                self.exhausted.add(node)
                log(WARNING, "aggregate_train: node %d declined: %s", node, reply.error.reason)
                if self.on_decline is not None:
                    self.on_decline(server_round, node, reply.error.reason)
        kept = [r for r in replies if not r.has_error() or r.error.code != BUDGET_EXHAUSTED]
        return self.strategy.aggregate_train(server_round, kept)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log(INFO, "\t├──> privacy budgets: clients that exhaust theirs are skipped")
        self.strategy.summary()
