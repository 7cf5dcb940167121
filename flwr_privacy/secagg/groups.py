"""Robust filtering while the server stays blind: SecAgg+ over small random groups.

Each round the sampled clients are split into fresh random groups of at least ``size``
(the OS CSPRNG shuffles them: no client picks its group, and the server cannot place a
victim beside chosen clients by the draw). Each group is its own SecAgg+ instance, so the
server unmasks only group sums; a robust filter then runs over the group means (the box
plot, or Flower's median, trimmed mean, Krum and Multi-Krum), and the kept groups are
averaged by their summed weights.

What the server learns is the weighted mean of every group of at least ``size`` clients
that unmasked, which groups the filter dropped, and (with ``suspicion``) which clients it
excluded. With ``size`` >= the number of clients it is plain SecAgg+.

Suspicion (group testing): a client whose groups are dropped far more often than other
clients' is excluded from later rounds. Groups are drawn afresh each round, so an honest
client's group is dropped with the same probability whoever it is; the pooled drop rate of
all clients still in (drops over client-rounds) is at least that probability when attackers'
groups are dropped more often, so it is a conservative stand-in for it. A client with ``d``
drops in ``n`` rounds is excluded once the binomial tail ``P(Bin(n, p) >= d)`` at that
pooled rate ``p`` falls below ``alpha / (clients * rounds)`` (the run's planned rounds;
``alpha / (clients * r * (r + 1))`` in round ``r`` when they are not given): the thresholds
over all rounds and clients sum to at most ``alpha``, so an honest client is excluded wrongly
with probability at most about ``alpha`` over the whole run ("about", as ``p`` is estimated
from the same rounds).

What this assumes, said plainly: honest clients' updates look alike (IID data). A client with
unusual data is dropped more often and can be excluded though honest. Colluding clients, who
see their group's members in the signed round parameters, can send outliers only when
grouped with a chosen honest client and so get it excluded (at a cost to their own record):
suspicion defends against attackers who poison blindly, not against ones who frame. Turn it
off (``suspicion=False``) where that matters more than removing attackers.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flwr_privacy.strategy.box_plot import BoxPlot, box_filter, client_scores

__all__ = [
    "DROPS_GROUPS", "GROUP_FILTERS", "GroupFilter", "Suspicion", "binomial_tail", "chunk_groups",
    "filter_groups", "random_groups", "random_order",
]

GROUP_FILTERS = ("mad", "boxplot", "median", "trimmed-mean", "krum", "multikrum")
DROPS_GROUPS = ("mad", "boxplot", "krum", "multikrum")  # the rules whose drops suspicion counts


@dataclass(frozen=True, kw_only=True)
class GroupFilter:
    """Settings of robust filtering over SecAgg+ group sums.

    Parameters
    ----------
    size : int
        Clients per group (at least 2; a short last group joins the previous one, so every
        group holds at least ``size``). Smaller groups filter better and reveal more.
    method : str
        ``"mad"`` (default) drops groups whose log distance to the coordinate-wise median
        group is more than ``mad_k`` median absolute deviations above the median one
        (breakdown at half the groups); ``"boxplot"`` drops groups outside the fences of
        ``box`` (breaks down once a quarter of the groups hold an attacker); ``"median"`` and
        ``"trimmed-mean"`` (coordinate-wise over the group means, Flower's), ``"krum"`` /
        ``"multikrum"`` (Flower's, told ``num_malicious`` groups).
    box : BoxPlot
        The box plot's settings (client variant: each group is one row).
    mad_k : float
        The ``"mad"`` fence in (normal-consistent) median absolute deviations.
    trim_beta : float
        The fraction trimmed from each end by ``"trimmed-mean"``.
    num_malicious : int
        Krum's assumed number of bad groups.
    suspicion : bool
        Exclude clients whose groups are dropped too often (module docstring).
    alpha : float
        The suspicion rule's error rate for honest clients, over all clients and rounds.
    rounds : int, optional
        The run's planned rounds, over which ``alpha`` is shared out (faster detection than
        the default share for an unknown number of rounds).
    min_rounds : int
        Rounds a client must have taken part in before it can be excluded.
    """

    size: int
    method: str = "mad"
    box: BoxPlot = field(default_factory=lambda: BoxPlot(scores=("median-distance",)))
    mad_k: float = 3.0
    trim_beta: float = 0.2
    num_malicious: int = 1
    suspicion: bool = True
    alpha: float = 0.01
    rounds: int | None = None
    min_rounds: int = 3

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ValueError(f"GroupFilter size = {self.size!r}: a group needs >= 2 clients "
                             "(a sum of one client is its update)")  # fmt: skip
        if self.method not in GROUP_FILTERS:
            raise ValueError(f"GroupFilter method {self.method!r} must be one of {GROUP_FILTERS}")
        if self.box.variant != "client":
            raise ValueError("GroupFilter filters whole groups: BoxPlot(variant='client')")
        if not 0 <= self.trim_beta < 0.5 or self.num_malicious < 0:
            raise ValueError("GroupFilter needs 0 <= trim_beta < 0.5 and num_malicious >= 0")
        if not 0 < self.alpha < 1 or self.min_rounds < 1:
            raise ValueError("GroupFilter needs 0 < alpha < 1 and min_rounds >= 1")


def random_order(nodes: Sequence[int]) -> list[int]:
    """The nodes in an order drawn from the OS CSPRNG (drawn once a round)."""
    order = list(nodes)
    secrets.SystemRandom().shuffle(order)
    return order


def chunk_groups(order: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive groups of ``order``, each of ``size`` to ``2 * size - 1`` nodes (a short last
    group is merged into the one before); none at all when fewer than ``size`` nodes remain."""
    count = len(order) // size
    if count == 0:
        return []
    groups = [list(order[i * size : (i + 1) * size]) for i in range(count)]
    groups[-1].extend(order[count * size :])
    return [sorted(g) for g in groups]


def random_groups(nodes: Sequence[int], size: int) -> list[list[int]]:
    """Fresh groups of ``size`` to ``2 * size - 1`` nodes from the OS CSPRNG (none if fewer than
    ``size`` nodes)."""
    return chunk_groups(random_order(nodes), size)


def filter_groups(
    means: np.ndarray, weights: np.ndarray, reference: np.ndarray, settings: GroupFilter
) -> tuple[np.ndarray, dict[int, str]]:
    """The robust aggregate of group means (G x d) and the dropped groups (index -> reason).

    ``weights`` are the groups' summed FedAvg weights; ``reference`` is the model the round
    started from (the box plot's ``norm`` score). The box plot and Multi-Krum average the
    kept groups by weight; the median and trimmed mean are coordinate-wise and drop no
    whole group.
    """
    from flwr.server.strategy.aggregate import (
        aggregate_krum,
        aggregate_median,
        aggregate_trimmed_avg,
    )

    g = len(means)
    if settings.method == "mad":
        dist = client_scores(means, reference, ("median-distance",))["median-distance"]
        logs = np.log(np.maximum(dist, 1e-12))
        center = float(np.median(logs))
        spread = max(1.4826 * float(np.median(np.abs(logs - center))), settings.box.min_spread)
        fence = center + settings.mad_k * spread
        out = {i: f"median-distance {dist[i]:.4g} > MAD fence {np.exp(fence):.4g}"
               for i in range(g) if logs[i] > fence}  # fmt: skip
        kept = [i for i in range(g) if i not in out]
        return np.average(means[kept], axis=0, weights=weights[kept]), out
    if settings.method == "boxplot":
        report = box_filter(list(range(g)), client_scores(means, reference, settings.box.scores),
                            settings.box, invalid={})  # fmt: skip
        kept = [i for i in range(g) if i not in report.dropped]
        mean = np.average(means[kept], axis=0, weights=weights[kept])
        return mean, dict(report.dropped)
    results = [([row], max(int(round(w)), 1)) for row, w in zip(means, weights, strict=True)]
    if settings.method == "median":
        return aggregate_median(results)[0], {}
    if settings.method == "trimmed-mean":
        return aggregate_trimmed_avg(results, settings.trim_beta)[0], {}
    f = min(settings.num_malicious, max(g - 3, 0))
    if settings.method == "krum":
        chosen = aggregate_krum(results, f, 0)[0]
        keep = {int(np.argmin([np.abs(m - chosen).sum() for m in means]))}
        mean = chosen
    else:  # multikrum: the g - f best-scored groups, weighted by examples (Flower's choice)
        mean = aggregate_krum(results, f, max(g - f, 1))[0]
        keep = _multikrum_kept(means, f, max(g - f, 1))
    return mean, {i: f"{settings.method}: not selected" for i in range(g) if i not in keep}


def _multikrum_kept(means: np.ndarray, f: int, to_keep: int) -> set[int]:
    """Which rows Flower's Multi-Krum keeps (its scores, recomputed to name the dropped)."""
    dist = ((means[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    closest = max(1, len(means) - f - 2)
    scores = [np.sort(row)[1 : closest + 1].sum() for row in dist]
    return {int(i) for i in np.argsort(scores)[:to_keep]}


@dataclass
class Suspicion:
    """Per-client record of dropped groups across rounds, and who is excluded."""

    alpha: float = 0.01
    min_rounds: int = 3
    planned: int | None = None  # the run's rounds, if known: alpha / (clients * planned)
    rounds: dict[int, int] = field(default_factory=dict)  # node -> rounds in a group
    dropped: dict[int, int] = field(default_factory=dict)  # node -> rounds its group dropped
    excluded: dict[int, int] = field(default_factory=dict)  # node -> round it was excluded
    tests: int = 0  # rounds in which the rule was applied

    def record(self, server_round: int, groups: Sequence[Sequence[int]],
               dropped: set[int]) -> list[int]:  # fmt: skip
        """Book one round (groups, indexes of the dropped ones); return newly excluded nodes."""
        for i, group in enumerate(groups):
            for node in group:
                self.rounds[node] = self.rounds.get(node, 0) + 1
                self.dropped[node] = self.dropped.get(node, 0) + (i in dropped)
        rate = self.honest_rate()
        clients = max(len(self.rounds), 1)
        if rate <= 0:  # nothing dropped yet: no evidence against anyone
            return []
        self.tests += 1  # this round's threshold: the run's alpha shared out over rounds
        share = self.planned if self.planned else self.tests * (self.tests + 1)
        threshold = self.alpha / (clients * share)
        new = []
        for node, n in self.rounds.items():
            if node in self.excluded or n < self.min_rounds:
                continue
            if binomial_tail(n, self.dropped[node], rate) < threshold:
                self.excluded[node] = server_round
                new.append(node)
        return new

    def honest_rate(self) -> float:
        """The pooled drop rate of the clients still in: drops over client-rounds."""
        kept = [n for n in self.rounds if n not in self.excluded]
        rounds = sum(self.rounds[n] for n in kept)
        return sum(self.dropped[n] for n in kept) / rounds if rounds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "excluded": {str(n): r for n, r in sorted(self.excluded.items())},
            "dropped": {str(n): [self.dropped[n], self.rounds[n]] for n in sorted(self.rounds)},
            "honest-rate": self.honest_rate(),
        }


def binomial_tail(n: int, d: int, p: float) -> float:
    """``P(X >= d)`` for ``X ~ Binomial(n, p)``, exactly."""
    if d <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    return float(sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(d, n + 1)))
