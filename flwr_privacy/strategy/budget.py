"""Client-side DP on the server: send the DP settings, skip clients that declined for budget.

This wrapper writes its ``DpSettings`` as the ``flwr-privacy.dp`` record on every
train and evaluate message, which is all the clients' DP mods and helpers read.

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
from flwr.serverapp.strategy import Strategy

from flwr_privacy.dp.client import BUDGET_EXHAUSTED
from flwr_privacy.dp.settings import DpSettings
from flwr_privacy.records import DP_RECORD, attach
from flwr_privacy.strategy.wrapper import StrategyWrapper

__all__ = ["BudgetGuard", "BudgetsExhausted", "DeclineFn"]

DeclineFn = Callable[[int, int, str], None]  # (server round, node id, reason)


class BudgetsExhausted(RuntimeError):
    """Too few clients have privacy budget left to run another round."""


class BudgetGuard(StrategyWrapper):
    """Send the DP settings to every client; nodes that declined for budget are not asked again.

    Parameters
    ----------
    inner : Strategy
        A FedAvg-family strategy (or a layer holding one): ``min_train_nodes`` is its.
    dp : DpSettings
        Sent to every client; ``rounds`` should be the run's number of rounds, over
        which the clients plan their noise.
    on_decline : callable, optional
        Called with (server round, node id, reason) for every client that declines.
    """

    def __init__(
        self, inner: Strategy, *, dp: DpSettings, on_decline: DeclineFn | None = None
    ) -> None:
        super().__init__(inner)
        self.dp = dp
        self.on_decline = on_decline
        self.exhausted: set[int] = set()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        left = set(grid.get_node_ids()) - self.exhausted
        minimum = int(self.inner.min_train_nodes)  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        if self.exhausted and len(left) < minimum:
            raise BudgetsExhausted(
                f"{len(self.exhausted)} clients exhausted their privacy budget; {len(left)} "
                f"left, fewer than min-clients = {minimum}"
            )
        messages = self.inner.configure_train(server_round, arrays, config, grid)
        kept = [m for m in messages if m.metadata.dst_node_id not in self.exhausted]
        return attach(kept, DP_RECORD, self.dp.to_record())

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
                    self.on_decline(server_round, node, reply.error.reason or "")
        kept = [r for r in replies if not r.has_error() or r.error.code != BUDGET_EXHAUSTED]
        return self.inner.aggregate_train(server_round, kept)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return attach(messages, DP_RECORD, self.dp.to_record())

    def summary(self) -> None:
        if self.dp.on_clients:
            dp = self.dp
            log(INFO, "\t├──> client DP (%s, epsilon %g over %d rounds): clients that exhaust "
                "their budget are skipped", dp.mode, dp.epsilon, dp.rounds)  # fmt: skip
        self.inner.summary()
