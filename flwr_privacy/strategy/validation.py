"""Reject malformed client replies before aggregation, so one bad client never ends a round.

Flower's FedAvg raises on inconsistent replies, which would stop the run; here
each reply is checked against the global model that was sent, and a bad one is
dropped with a reason naming the node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import WARNING
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flwr_privacy.records import as_float
from flwr_privacy.strategy.wrapper import StrategyWrapper

__all__ = [
    "RejectFn",
    "ReplyValidation",
    "Signature",
    "Validated",
    "accepted",
    "array_signature",
    "reply_problem",
    "reply_weight",
]

if TYPE_CHECKING:  # the mixins below always come before FedAvg (or a subclass) in the bases
    from flwr.serverapp.strategy import FedAvg as _FedAvgMixinBase
else:
    _FedAvgMixinBase = object

Signature = dict[str, tuple[tuple[int, ...], str]]
RejectFn = Callable[[int, str], None]


def array_signature(arrays: ArrayRecord) -> Signature:
    """Key -> (shape, dtype) of every array in a record."""
    return {k: (tuple(a.shape), a.dtype) for k, a in arrays.items()}


def reply_weight(content: RecordDict, weight_key: str) -> float:
    """The aggregation weight of a validated reply (its only MetricRecord's ``weight_key``)."""
    return as_float(next(iter(content.metric_records.values()))[weight_key])


def reply_problem(
    content: RecordDict, *, weight_key: str, arrays_key: str | None, expected: Signature | None
) -> str | None:
    """Why a reply cannot be aggregated, or None if it can.

    ``arrays_key`` None checks the metrics only (evaluate replies).
    """
    metrics = list(content.metric_records.values())
    if len(metrics) != 1:
        return f"expected one MetricRecord, got {len(metrics)}"
    weight = metrics[0].get(weight_key)
    if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
        return f"'{weight_key}' must be a positive integer, got {weight!r}"
    if arrays_key is None:
        return None
    if arrays_key not in content.array_records or len(content.array_records) != 1:
        return f"expected exactly one ArrayRecord under '{arrays_key}'"
    record = content.array_records[arrays_key]
    got = array_signature(record)
    if expected is not None and got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        return (
            "arrays do not match the global model "
            f"(missing {missing}, extra {extra}, shape/dtype {wrong})"
        )
    for key, array in record.items():
        if not np.all(np.isfinite(array.numpy())):
            return f"array '{key}' holds NaN or infinite values"
    return None


def accepted(
    replies: Iterable[Message],
    *,
    phase: str,
    weight_key: str,
    arrays_key: str | None,
    expected: Signature | None,
    on_reject: RejectFn | None,
) -> list[Message]:
    """The replies that can be aggregated; each other one is logged and reported with a reason.

    ``arrays_key`` None checks the metrics only (evaluate replies).
    """
    kept = []
    for reply in replies:
        problem = None
        if not reply.has_error():
            problem = reply_problem(
                reply.content, weight_key=weight_key, arrays_key=arrays_key, expected=expected
            )
        if problem is None:
            kept.append(reply)
            continue
        node = reply.metadata.src_node_id
        log(WARNING, "%s: rejected reply from node %d: %s", phase, node, problem)
        if on_reject is not None:
            on_reject(node, problem)
    return kept


class ReplyValidation(_FedAvgMixinBase):
    """Mixin for our own FedAvg subclasses (encrypted aggregation): checks evaluate replies.

    Put it before the Flower strategy in the bases: ``class X(ReplyValidation, FedAvg)``.
    """

    def __init__(self, *args: Any, on_reject: RejectFn | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_reject = on_reject

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        kept = accepted(replies, phase="aggregate_evaluate", weight_key=self.weighted_by_key,
                        arrays_key=None, expected=None, on_reject=self.on_reject)  # fmt: skip
        return super().aggregate_evaluate(server_round, kept)


class Validated(StrategyWrapper):
    """Drops malformed replies before the inner strategy sees them, so one bad client never
    ends a round (Flower's FedAvg raises on inconsistent replies, which stops the run).

    Parameters
    ----------
    inner : Strategy
        Any strategy of Flower's FedAvg family (FedAvg, FedProx, Krum, FedMedian, ...).
    on_reject : callable, optional
        Receives ``(node_id, reason)`` for every dropped reply.
    """

    def __init__(self, inner: Strategy, *, on_reject: RejectFn | None = None) -> None:
        super().__init__(inner)
        self.on_reject = on_reject
        self._expected: Signature | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._expected = array_signature(arrays)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def accepted(self, replies: Iterable[Message], *, train: bool) -> list[Message]:
        weight_key = self.inner.weighted_by_key  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        arrays_key = self.inner.arrayrecord_key  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        return accepted(
            replies,
            phase="aggregate_train" if train else "aggregate_evaluate",
            weight_key=weight_key,
            arrays_key=arrays_key if train else None,
            expected=self._expected if train else None,
            on_reject=self.on_reject,
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, self.accepted(replies, train=True))

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, self.accepted(replies, train=False))
