"""The SecAgg+ communication graph: each client masks and shares with ``k`` neighbours.

Bell et al. use a random Harary graph: nodes in a random ring order, each
joined to the ``k/2`` nearest on either side. The server draws the order from
the OS CSPRNG each round (a fixed order would let a coalition plan its seats).
``k >= n - 1`` is the complete graph: the original SecAgg of Bonawitz et al.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable


def default_degree(num_clients: int) -> int:
    """About ``2 log2 n`` neighbours (even), as Bell et al. suggest; all when n is small."""
    if num_clients <= 1:
        return 0
    k = 2 * math.ceil(math.log2(num_clients))
    return min(k + (k % 2), num_clients - 1)


def harary(nodes: Iterable[int], k: int, rng: random.Random | None = None) -> dict[int, set[int]]:
    """Neighbours of every node: a random Harary graph of degree ``k`` (complete if k >= n-1)."""
    order = sorted(set(nodes))
    n = len(order)
    if k < 0:
        raise ValueError(f"the degree k must be >= 0, got {k}")
    if k >= n - 1:
        return {a: {b for b in order if b != a} for a in order}
    (rng or random.SystemRandom()).shuffle(order)
    half = max(k // 2, 1)
    graph: dict[int, set[int]] = {a: set() for a in order}
    for p, a in enumerate(order):
        for step in range(1, half + 1):
            b = order[(p + step) % n]
            graph[a].add(b)
            graph[b].add(a)
    return graph
