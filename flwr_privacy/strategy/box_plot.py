"""Box-plot (Tukey fence) filtering of client updates, as in the MCSN paper's Paillier-DNN-BPM.

Each round every client update gets one or more scores; a client whose score
lies outside ``[Q1 - k*IQR, Q3 + k*IQR]`` (computed on log scores, see
``box_filter``) is dropped and the rest are averaged by weighted FedAvg. The
coordinate-wise variant applies the fences per parameter instead and averages,
per parameter, only the values inside them.

Quartiles are "inner" by default: Q1 and Q3 are the order statistics at or
inside the 25th and 75th percentile positions (numpy ``higher`` / ``lower``).
With linear interpolation three outliers among ten clients already pull Q3 up
into their own cluster and the fence no longer excludes them; inner quartiles
keep Q3 on an honest client as long as fewer than ``n - floor(0.75 (n-1))``
clients are outliers (3 of 10, 5 of 20): the box plot's breakdown stays near
25%. Their distance is rescaled to the interpolated quartile span (``fences``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flwr_privacy.records import flatten, unflatten
from flwr_privacy.strategy.validation import RejectFn, Validated, reply_weight
from flwr_privacy.strategy.wrapper import fedavg_or_fedprox, innermost

__all__ = [
    "BoxPlot",
    "BoxPlotFedAvg",
    "BoxPlotFilter",
    "FilterFn",
    "FilterReport",
    "MIN_CLIENTS",
    "ONE_SIDED",
    "QUARTILES",
    "SCORES",
    "TINY",
    "VARIANTS",
    "box_filter",
    "client_scores",
    "coordinate_mean",
    "fences",
    "log_report",
    "quartiles",
]

SCORES = ("median-distance", "mean-distance", "norm")
VARIANTS = ("client", "coordinate")
QUARTILES = ("inner", "linear")
# A distance to the consensus below the lower fence means "closer than usual":
# not an anomaly, so distance scores use the upper fence only. Update norms use
# both (a near-zero update is a free rider echoing the global model back).
ONE_SIDED = ("median-distance", "mean-distance")
MIN_CLIENTS = 4  # fewer replies give no meaningful quartiles: aggregate them unfiltered
TINY = 1e-12  # floor before the log: a zero score (an echoed model) is far below any fence


@dataclass(frozen=True)
class BoxPlot:
    """Filter settings: fence width ``k``, scores, client or coordinate variant, quartile rule.

    ``min_spread`` is the smallest IQR of the log scores the client variant uses:
    scores within ``exp(k * min_spread)`` (16 % by default) of the quartiles are
    never outliers. Without it, ties are split by rounding: one large outlier
    among four clients pulls the mean so far that every honest distance to it is
    the same number, the IQR is ~1e-16 and honest clients fell outside at random.
    """

    k: float = 1.5
    scores: tuple[str, ...] = ("median-distance",)
    variant: str = "client"
    quartiles: str = "inner"
    min_spread: float = 0.1

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"box-plot k must be >= 0, got {self.k}")
        if self.min_spread < 0:
            raise ValueError(f"box-plot min_spread must be >= 0, got {self.min_spread}")
        if not self.scores or any(s not in SCORES for s in self.scores):
            raise ValueError(f"box-plot scores {self.scores} must be among {SCORES}")
        if self.variant not in VARIANTS:
            raise ValueError(f"box-plot variant {self.variant!r} must be one of {VARIANTS}")
        if self.quartiles not in QUARTILES:
            raise ValueError(f"box-plot quartiles {self.quartiles!r} must be one of {QUARTILES}")


@dataclass
class FilterReport:
    """What the filter saw and decided in one round (recorded in results.json)."""

    variant: str
    received: int
    nodes: list[int] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    fences: dict[str, tuple[float, float]] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    excluded_values: int = 0
    note: str = ""
    tier: str = ""  # hierarchical runs: "edge-<id>" or "cloud" (nodes are edge ids there)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "variant": self.variant,
            "received": self.received,
            "kept": self.received - len(self.dropped),
            "dropped": {str(n): why for n, why in self.dropped.items()},
        }
        if self.scores:
            out["scores"] = {
                kind: dict(zip(map(str, self.nodes), vals, strict=True))
                for kind, vals in self.scores.items()
            }
            out["fences"] = {kind: list(f) for kind, f in self.fences.items()}
        if self.variant == "coordinate":
            out["excluded-values"] = self.excluded_values
        if self.note:
            out["note"] = self.note
        if self.tier:
            out["tier"] = self.tier
        return out


FilterFn = Callable[[int, FilterReport], None]


def quartiles(values: np.ndarray, method: str = "inner", axis: int | None = None) -> tuple:
    """(Q1, Q3) of ``values`` along ``axis`` under the named quartile rule."""
    if method == "inner":
        return (
            np.quantile(values, 0.25, axis=axis, method="higher"),
            np.quantile(values, 0.75, axis=axis, method="lower"),
        )
    return np.quantile(values, 0.25, axis=axis), np.quantile(values, 0.75, axis=axis)


def fences(
    values: np.ndarray,
    k: float = 1.5,
    method: str = "inner",
    axis: int | None = None,
    min_iqr: float = 0.0,
):
    """Tukey fences ``(Q1 - k*IQR, Q3 + k*IQR)``, the IQR at least ``min_iqr``.

    Inner quartiles sit closer together than the interpolated ones (order
    statistics 3 and 6 of 0..9 instead of positions 2.25 and 6.75), so their
    distance is rescaled to the interpolated span, ``0.5 (n-1) / (i3 - i1)``:
    the fence keeps its usual width without letting outliers move Q3.
    """
    q1, q3 = quartiles(values, method, axis)
    iqr = q3 - q1
    if method == "inner":
        n = np.size(values) if axis is None else np.shape(values)[axis]
        i1, i3 = math.ceil(0.25 * (n - 1)), math.floor(0.75 * (n - 1))
        iqr = iqr * (0.5 * (n - 1) / (i3 - i1) if i3 > i1 else 1.0)
    iqr = np.maximum(iqr, min_iqr)
    return q1 - k * iqr, q3 + k * iqr


def client_scores(
    updates: np.ndarray, reference: np.ndarray, kinds: Iterable[str]
) -> dict[str, np.ndarray]:
    """Root-mean-square distances of each row of ``updates`` (n x d).

    ``median-distance``: to the coordinate-wise median update; ``mean-distance``:
    to the plain mean update; ``norm``: to ``reference`` (the global model sent
    this round), i.e. the size of the client's update. Dividing by sqrt(d) only
    rescales (fence decisions are unchanged) and matches the encrypted scores.
    """
    d = max(updates.shape[1], 1)

    def rms(diff: np.ndarray) -> np.ndarray:
        return np.sqrt(np.sum(diff * diff, axis=1) / d)

    centers = {
        "median-distance": lambda: np.median(updates, axis=0),
        "mean-distance": lambda: updates.mean(axis=0),
        "norm": lambda: reference,
    }
    return {kind: rms(updates - centers[kind]()) for kind in kinds}


def box_filter(
    nodes: Sequence[int], scores: dict[str, np.ndarray], box: BoxPlot, *, invalid: dict[int, str]
) -> FilterReport:
    """Drop nodes outside the fences of any score; ``invalid`` nodes are dropped up front.

    Fences are computed on log scores and mapped back: distances and norms are
    positive and right-skewed (a client twice as far as typical is as unusual as
    one half as far), and on the raw scale the long honest tail is cut off too
    often (10 % of honest client-rounds dropped with no attacker on breast
    cancer, 4 % on the log scale; docs/guides/robust.md). Distance scores (``ONE_SIDED``) drop
    above the upper fence only.
    """
    report = FilterReport(variant="client", received=len(nodes), nodes=list(nodes))
    report.dropped.update(invalid)
    valid = np.array([n not in invalid for n in nodes])
    for kind, vals in scores.items():
        vals = np.asarray(vals, dtype=np.float64)
        report.scores[kind] = [float(v) for v in vals]
        if valid.sum() < MIN_CLIENTS:
            report.note = f"fewer than {MIN_CLIENTS} valid scores: no fences"
            continue
        lo, hi = np.exp(fences(
            np.log(np.maximum(vals[valid], TINY)), box.k, box.quartiles, min_iqr=box.min_spread
        ))
        report.fences[kind] = (float(lo), float(hi))  # as computed, also when one-sided
        if kind in ONE_SIDED:
            lo = -np.inf
        for node, v, ok in zip(nodes, vals, valid, strict=True):
            if ok and not lo <= v <= hi and node not in report.dropped:
                side = f"> upper fence {hi:.4g}" if v > hi else f"< lower fence {lo:.4g}"
                report.dropped[node] = f"{kind} {v:.4g} {side}"
    return report


def coordinate_mean(
    values: np.ndarray, weights: np.ndarray, box: BoxPlot
) -> tuple[np.ndarray, int]:
    """Per-coordinate weighted mean over the values inside that coordinate's fences.

    Returns the mean and how many values were excluded. With inner quartiles the
    values at Q1 and Q3 are always inside, so no coordinate is left empty.
    """
    if len(values) < MIN_CLIENTS:
        return np.average(values, axis=0, weights=weights), 0
    lo, hi = fences(values, box.k, box.quartiles, axis=0)
    inside = (values >= lo) & (values <= hi)
    w = inside * weights[:, None]
    total = w.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    mean = np.where(total > 0, (w * values).sum(axis=0) / safe, np.median(values, axis=0))
    return mean, int((~inside).sum())


def log_report(server_round: int, report: FilterReport, on_filter: FilterFn | None) -> None:
    """Log the dropped nodes with their reasons and hand the report to the recorder."""
    for node, why in report.dropped.items():
        log(INFO, "aggregate_train: box plot dropped node %d: %s", node, why)
    log(INFO, "aggregate_train: box plot kept %d of %d replies%s",
        report.received - len(report.dropped), report.received,
        f" ({report.note})" if report.note else "")  # fmt: skip
    if on_filter is not None:
        on_filter(server_round, report)


class BoxPlotFilter(Validated):
    """Box-plot filtering before the inner strategy aggregates (plaintext updates).

    Parameters
    ----------
    inner : Strategy
        A FedAvg-family strategy (FedAvg, FedProx) that averages the survivors.
    box : BoxPlot
        Fence width, scores, client or coordinate variant (default ``BoxPlot()``).
    on_filter : callable, optional
        Receives ``(round, FilterReport)`` every round.
    on_reject : callable, optional
        Receives ``(node_id, reason)`` for every malformed reply dropped first.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        box: BoxPlot | None = None,
        on_filter: FilterFn | None = None,
        on_reject: RejectFn | None = None,
    ) -> None:
        super().__init__(inner, on_reject=on_reject)
        self.box = box or BoxPlot()
        self.on_filter = on_filter
        self._reference: np.ndarray | None = None

    def summary(self) -> None:
        log(INFO, "\t├──> Box-plot filter: %s", self.box)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._reference = flatten(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self.accepted(replies, train=True)
        if not kept:
            return None, None
        weight_key = self.inner.weighted_by_key  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        arrays_key = self.inner.arrayrecord_key  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        records = [r.content.array_records[arrays_key] for r in kept]
        updates = np.stack([flatten(a) for a in records])
        nodes = [r.metadata.src_node_id for r in kept]
        if self.box.variant == "coordinate":
            weights = np.array([reply_weight(r.content, weight_key) for r in kept])
            mean, excluded = coordinate_mean(updates, weights, self.box)
            report = FilterReport("coordinate", len(kept), nodes, excluded_values=excluded)
            log_report(server_round, report, self.on_filter)
            metrics = innermost(self).train_metrics_aggr_fn([r.content for r in kept], weight_key)
            return unflatten(mean, records[0]), metrics
        assert self._reference is not None
        report = box_filter(
            nodes, client_scores(updates, self._reference, self.box.scores), self.box, invalid={}
        )
        log_report(server_round, report, self.on_filter)
        survivors = [r for r in kept if r.metadata.src_node_id not in report.dropped]
        return self.inner.aggregate_train(server_round, survivors)


class BoxPlotFedAvg(BoxPlotFilter):
    """FedAvg over the client updates inside the box-plot fences (or per-coordinate fences).

    Takes FedAvg's keyword arguments besides ``box``, ``on_filter`` and
    ``on_reject``; ``proximal_mu > 0`` makes the inner strategy FedProx.
    """

    def __init__(
        self,
        *,
        box: BoxPlot | None = None,
        on_filter: FilterFn | None = None,
        on_reject: RejectFn | None = None,
        proximal_mu: float = 0.0,
        **fedavg_kwargs: Any,
    ) -> None:
        inner = fedavg_or_fedprox(proximal_mu, **fedavg_kwargs)
        super().__init__(inner, box=box, on_filter=on_filter, on_reject=on_reject)
