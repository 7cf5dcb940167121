"""Louder failures, quieter logs: a wrapper that ends a run nobody contributes to.

``StopOnEmptyRounds`` holds an inner strategy (as Flower's DP wrappers do) and
counts rounds whose ``aggregate_train`` returned no arrays: every reply failed,
was refused, or none came. After ``max_empty_rounds`` such rounds in a row (or
every round of a shorter run) it raises ``NoContributionError`` naming the
rounds and, per node, why its reply did not count, instead of letting the run
"finish" with an untrained model.

While it runs, long lists in Flower's log lines (e.g. a 30-value config entry in
the strategy's start summary) print as ``[30 floats]`` (``ShortLists``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from flwr_privacy.strategy.wrapper import StrategyWrapper

__all__ = [
    "NOT_AGGREGATED",
    "NO_REPLY",
    "NoContributionError",
    "RejectionsFn",
    "ShortLists",
    "StopOnEmptyRounds",
    "short_lists",
    "shorten",
]

RejectionsFn = Callable[[], Mapping[int, str]]  # node id -> why the inner strategy refused it
NO_REPLY = "no reply within the round timeout"
NOT_AGGREGATED = "reply not aggregated by the strategy"


class NoContributionError(RuntimeError):
    """No client contributed to the model for ``limit`` rounds in a row.

    ``rounds`` lists those rounds; ``reasons`` maps each of them to node id -> why that
    node's reply did not count (its error, the strategy's rejection, or no reply).
    """

    def __init__(self, reasons: Mapping[int, Mapping[int, str]], limit: int) -> None:
        self.reasons = {r: dict(nodes) for r, nodes in reasons.items()}
        self.rounds = sorted(self.reasons)
        self.limit = limit
        last = self.reasons[self.rounds[-1]] if self.rounds else {}
        why = "; ".join(f"node {n}: {reason}" for n, reason in sorted(last.items()))
        super().__init__(
            f"no client contributed in rounds {self.rounds} ({limit} empty rounds in a row "
            f"end the run); round {self.rounds[-1] if self.rounds else '-'}: "
            f"{why or 'no node was sampled'}. Fix the cause the nodes report (their "
            "ClientApp logs hold the tracebacks) and start the run again"
        )


class StopOnEmptyRounds(StrategyWrapper):
    """Wrap any strategy; raise ``NoContributionError`` after too many empty rounds.

    Parameters
    ----------
    strategy : Strategy
        The strategy that configures and aggregates the rounds.
    max_empty_rounds : int (default: 3)
        Consecutive rounds without aggregated arrays that end the run (>= 1).
    rejections : Callable[[], Mapping[int, str]], optional
        This round's reasons the inner strategy gave for refusing replies (node id ->
        reason), e.g. collected from its ``on_reject`` callback. Without it, a refused
        reply is reported as "reply not aggregated by the strategy".
    """

    def __init__(
        self,
        strategy: Strategy,
        max_empty_rounds: int = 3,
        *,
        rejections: RejectionsFn | None = None,
    ) -> None:
        if not isinstance(max_empty_rounds, int) or max_empty_rounds < 1:
            raise ValueError(f"max_empty_rounds = {max_empty_rounds!r}: use an integer >= 1")
        super().__init__(strategy)
        self.strategy = strategy
        self.max_empty_rounds = max_empty_rounds
        self.rejections = rejections
        self._limit = max_empty_rounds
        self._empty: dict[int, dict[int, str]] = {}  # round -> node -> reason, this streak
        self._messages: list[Message] = []  # this round's train messages (ids set when pushed)

    def start(  # the other arguments of Flower's start pass through
        self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, *args: Any,
        **kwargs: Any,
    ) -> Result:  # fmt: skip
        """Flower's own loop; fails after ``min(max_empty_rounds, num_rounds)`` empty rounds.

        Long lists in Flower's log lines are shortened while it runs (``short_lists``).
        """
        self._limit = min(self.max_empty_rounds, num_rounds)
        self._empty = {}
        with short_lists(FLOWER_LOGGER):
            return super().start(grid, initial_arrays, num_rounds, *args, **kwargs)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._messages = messages  # ids are set when the grid pushes them
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            self._empty = {}
            return arrays, metrics
        self._empty[server_round] = reasons = self._reasons(replies)
        why = "; ".join(f"node {n}: {r}" for n, r in sorted(reasons.items()))
        log(WARNING, "aggregate_train: round %d: no client contributed (%d of %d in a row): %s",
            server_round, len(self._empty), self._limit, why or "no node sampled")  # fmt: skip
        if len(self._empty) >= self._limit:
            raise NoContributionError(self._empty, self._limit)
        return arrays, metrics

    def _reasons(self, replies: list[Message]) -> dict[int, str]:
        """Node id -> why its reply did not count: its error, the strategy's refusal, silence."""
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in self._messages}
        self._messages = []
        refused = dict(self.rejections()) if self.rejections is not None else {}
        out: dict[int, str] = {}
        for reply in replies:
            meta = reply.metadata
            # Errors the SuperLink makes itself carry its own id: recover the destination.
            node = sent.get(meta.reply_to_message_id, meta.src_node_id)
            if reply.has_error():
                out[node] = f"error {reply.error.code}: {reply.error.reason}"
            else:
                out[node] = refused.get(node, NOT_AGGREGATED)
        for node in sent.values():
            out.setdefault(node, NO_REPLY)
        return out

    def summary(self) -> None:
        log(INFO, "\t├──> stop after %d rounds in a row without a contribution",
            self.max_empty_rounds)  # fmt: skip
        self.strategy.summary()


_LIST = re.compile(r"\[([^\[\]]*)\]")


def _kind(items: list[str]) -> str:
    for name, cast in (("ints", int), ("floats", float)):
        try:
            [cast(s) for s in items]
        except ValueError:
            continue
        return name
    return "items"


def shorten(text: str, limit: int = 8) -> str:
    """Replace each flat list literal of more than ``limit`` items by ``[<n> <kind>]``."""

    def short(match: re.Match[str]) -> str:
        items = [s.strip() for s in match.group(1).split(",") if s.strip()]
        if len(items) <= limit:
            return match.group(0)
        return f"[{len(items)} {_kind(items)}]"

    return _LIST.sub(short, text)


class ShortLists(logging.Filter):
    """A logging filter that shortens long lists in a record's arguments (never drops one)."""

    def __init__(self, limit: int = 8) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._short(a) for a in record.args)
        return True

    def _short(self, arg: object) -> object:
        if isinstance(arg, list | tuple) and len(arg) > self.limit:
            return shorten(str(list(arg)), self.limit)
        return shorten(arg, self.limit) if isinstance(arg, str) else arg


@contextmanager
def short_lists(logger: logging.Logger = FLOWER_LOGGER, limit: int = 8) -> Iterator[ShortLists]:
    """``ShortLists`` on ``logger`` inside the block only (Flower's logger by default)."""
    flt = ShortLists(limit)
    logger.addFilter(flt)
    try:
        yield flt
    finally:
        logger.removeFilter(flt)
