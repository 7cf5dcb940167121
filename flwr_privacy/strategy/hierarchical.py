"""Terminal-edge-cloud aggregation (the MCSN paper's hierarchy) over any of our strategies.

Every client (terminal) belongs to one edge. Each round the flat strategy's
own aggregation step (reply validation, box-plot filtering, plaintext mean or
ciphertext sum) runs once per edge on that edge's replies; the cloud tier then
combines the edge results, weighted by the examples each edge aggregated, after
an optional box plot over the edge results. With HE both tiers add ciphertexts
only: an edge result is the encrypted sum of its clients' weighted updates and
the cloud adds those sums, so the global model equals the flat encrypted sum.

Both tiers run in the ServerApp process (edges are logical, as in Flower's
simulation the SuperLink is one process); the bytes a separate edge server
would send to the cloud are measured as the serialized size of its result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from flwr_privacy.he import Payload, aggregate, is_encrypted
from flwr_privacy.records import as_float
from flwr_privacy.strategy.box_plot import (
    BoxPlot,
    FilterFn,
    FilterReport,
    box_filter,
    client_scores,
    flatten,
    log_report,
    unflatten,
)
from flwr_privacy.strategy.encrypted import AllKeysMismatched
from flwr_privacy.strategy.validation import reply_weight
from flwr_privacy.strategy.wrapper import StrategyWrapper, innermost, layers

__all__ = ["EdgeResult", "Hierarchical", "TIERS", "TierFn", "assign_edges", "record_bytes"]

TIERS = ("edge", "cloud", "both")
TierFn = Callable[[int, dict[str, Any]], None]


def assign_edges(
    partitions: Mapping[int, int],
    num_edges: int,
    declared: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """The edge of every node: its declared ``edge-id`` (node config) if any, else by partition.

    Undeclared nodes fill edges in contiguous blocks of partition ids
    (``pid * num_edges // num_partitions``), so the assignment depends only on
    the partition, never on node ids or arrival order.
    """
    if num_edges < 1:
        raise ValueError(f"the number of edges must be >= 1, got {num_edges}")
    declared = dict(declared or {})
    bad = {n: e for n, e in declared.items() if not 0 <= e < num_edges}
    if bad:
        raise ValueError(f"edge-id outside [0, {num_edges}) for nodes {bad}")
    num_partitions = max(partitions.values(), default=-1) + 1
    return {
        node: declared.get(node, pid * num_edges // max(num_partitions, 1))
        for node, pid in partitions.items()
    }


def record_bytes(arrays: ArrayRecord) -> int:
    """Serialized size of an ArrayRecord as Flower would ship it."""
    return recorddict_to_proto(RecordDict({"arrays": arrays})).ByteSize()


@dataclass
class EdgeResult:
    """One edge's aggregate of a round and what went into it."""

    edge: int
    arrays: ArrayRecord
    examples: float
    contents: list[RecordDict]
    received: int


class Hierarchical(StrategyWrapper):
    """Aggregate per edge with the inner strategy, then combine the edges at the cloud.

    Parameters
    ----------
    inner : Strategy
        The flat strategy (validated FedAvg/FedProx, a box-plot filter, or an
        encrypted strategy); its own aggregation step runs once per edge.
    edges : dict[int, int]
        Node id -> edge id (``assign_edges``). A node missing from it (joined
        after set-up) goes to edge ``node % num_edges`` with a warning.
    cloud_box : BoxPlot, optional
        Box plot over the edge results (plaintext only; needs at least 4 edges
        for fences, fewer are combined unfiltered).
    on_tiers : callable, optional
        Receives ``(round, tiers)``: per-edge counts and bytes edge -> cloud.
    on_filter : callable, optional
        Receives the filter reports of both tiers, labelled ``edge-<i>`` / ``cloud``.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        edges: Mapping[int, int],
        cloud_box: BoxPlot | None = None,
        on_tiers: TierFn | None = None,
        on_filter: FilterFn | None = None,
    ) -> None:
        super().__init__(inner)
        base = innermost(inner)
        if cloud_box is not None and getattr(base, "server_blind", False):
            raise ValueError(
                "box-plot filtering at the cloud tier needs plaintext edge results; with HE "
                "filter at the edge tier (hierarchy.filter-tier = 'edge')"
            )
        if cloud_box is not None and cloud_box.variant != "client":
            raise ValueError("the cloud tier filters whole edge results: use variant 'client'")
        for layer in layers(inner):  # the edge tier's filter reports carry the edge
            if hasattr(layer, "on_filter"):
                layer.on_filter = self._edge_filtered
        self.base = base
        self.edges = dict(edges)
        self.num_edges = max(self.edges.values(), default=0) + 1
        self.cloud_box = cloud_box
        self.on_tiers = on_tiers
        self.on_tier_filter = on_filter
        self._reference: np.ndarray | None = None
        self._global_bytes = 0
        self._edge = 0  # the edge being aggregated, for its filter report

    def _edge_filtered(self, server_round: int, report: FilterReport) -> None:
        report.tier = f"edge-{self._edge}"
        if self.on_tier_filter is not None:
            self.on_tier_filter(server_round, report)

    def summary(self) -> None:
        log(INFO, "\t├──> Hierarchical: %d edges, cloud box plot: %s",
            self.num_edges, self.cloud_box)  # fmt: skip
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._reference = None if is_encrypted(arrays) else flatten(arrays)
        self._global_bytes = record_bytes(arrays)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def _edge_of(self, node: int) -> int:
        if node not in self.edges:
            self.edges[node] = node % self.num_edges
            log(WARNING, "aggregate_train: node %d joined after set-up; assigned to edge %d",
                node, self.edges[node])  # fmt: skip
        return self.edges[node]

    def _aggregate_edge(
        self, server_round: int, edge: int, replies: list[Message]
    ) -> tuple[EdgeResult | None, MetricRecord | None]:
        """Run the flat strategy's aggregation on one edge's replies.

        Every strategy of ours hands exactly the replies it aggregated to
        ``train_metrics_aggr_fn``; capturing that call gives the edge's example
        count without reaching into the filter.
        """
        used: list[list[RecordDict]] = []
        report = self.base.train_metrics_aggr_fn

        def capture(contents: list[RecordDict], key: str) -> MetricRecord:
            used.append(list(contents))
            return aggregate_metricrecords(contents, key)

        self.base.train_metrics_aggr_fn = capture
        self._edge = edge
        try:
            arrays, metrics = self.inner.aggregate_train(server_round, replies)
        finally:
            self.base.train_metrics_aggr_fn = report
        if arrays is None or not used:
            log(WARNING, "aggregate_train: edge %d has no aggregate in round %d",
                edge, server_round)  # fmt: skip
            return None, None
        contents = used[-1]
        examples = sum(reply_weight(c, self.base.weighted_by_key) for c in contents)
        return EdgeResult(edge, arrays, examples, contents, len(replies)), metrics

    def _cloud_filter(self, server_round: int, results: list[EdgeResult]) -> list[EdgeResult]:
        if self.cloud_box is None:
            return results
        assert self._reference is not None
        updates = np.stack([flatten(r.arrays) for r in results])
        names = [r.edge for r in results]
        report = box_filter(
            names, client_scores(updates, self._reference, self.cloud_box.scores),
            self.cloud_box, invalid={},
        )  # fmt: skip
        report.tier = "cloud"
        log_report(server_round, report, self.on_tier_filter)
        return [r for r in results if r.edge not in report.dropped]

    def _combine(self, results: list[EdgeResult]) -> ArrayRecord:
        """Cloud tier: add encrypted edge sums, or average plaintext edge means by examples."""
        if is_encrypted(results[0].arrays):
            payloads = [Payload.from_arrays(r.arrays) for r in results]
            return aggregate(payloads, bundle=self.base.bundle).to_arrays()
        weights = np.array([r.examples for r in results], dtype=np.float64)
        stacked = np.stack([flatten(r.arrays) for r in results])
        return unflatten(np.average(stacked, axis=0, weights=weights), results[0].arrays)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        groups: dict[int, list[Message]] = {}
        for reply in replies:
            groups.setdefault(self._edge_of(reply.metadata.src_node_id), []).append(reply)
        results, he_seconds, mismatched = [], 0.0, []
        for edge in sorted(groups):
            try:
                result, metrics = self._aggregate_edge(server_round, edge, groups[edge])
            except AllKeysMismatched as e:  # one edge on other keys must not end the run
                log(WARNING, "aggregate_train: edge %d: %s", edge, e)
                mismatched.append(e)
                continue
            if result is not None:
                results.append(result)
                if metrics is not None:
                    he_seconds += as_float(metrics.get("he-aggregate-s", 0.0))
        if not results:
            if mismatched and len(mismatched) == len(groups):
                raise mismatched[0]
            return None, None
        kept = self._cloud_filter(server_round, results)
        arrays = self._combine(kept)
        metrics = self.base.train_metrics_aggr_fn(
            [c for r in kept for c in r.contents], self.base.weighted_by_key
        )
        if he_seconds:
            metrics["he-aggregate-s"] = he_seconds
        tiers = {
            "edges": {
                str(r.edge): {
                    "received": r.received,
                    "aggregated": len(r.contents),
                    "examples": r.examples,
                    "to-cloud-bytes": record_bytes(r.arrays),
                    "kept-by-cloud": r in kept,
                }  # fmt: skip
                for r in results
            },
            "edge-to-cloud-bytes": sum(record_bytes(r.arrays) for r in results),
            "cloud-to-edge-bytes": self._global_bytes * len(groups),
        }
        log(INFO, "aggregate_train: %d edges -> cloud (%d kept), %d B edge->cloud",
            len(results), len(kept), tiers["edge-to-cloud-bytes"])  # fmt: skip
        if self.on_tiers is not None:
            self.on_tiers(server_round, tiers)
        return arrays, metrics
