"""The SecAgg+ communication graph: each client masks and shares with ``k`` neighbours.

Bell et al. use a random Harary graph: nodes in a random ring order, each
joined to the ``k/2`` nearest on either side. The order is that of SHA-256 over a
32-byte seed and each node id; the server draws the seed from the OS CSPRNG each
round and announces it with the round's parameters, so every client derives the
same graph and can check its own neighbourhood (a server cannot show two clients
graphs that disagree). ``k >= n - 1`` is the complete graph: the original SecAgg
of Bonawitz et al.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable

SEED_BYTES = 32


def new_graph_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


def default_degree(num_clients: int) -> int:
    """About ``2 log2 n`` neighbours (even), as Bell et al. suggest; all when n is small."""
    if num_clients <= 1:
        return 0
    k = 2 * math.ceil(math.log2(num_clients))
    return min(k + (k % 2), num_clients - 1)


def _place(seed: bytes, node: int) -> bytes:
    return hashlib.sha256(seed + int(node).to_bytes(8, "little", signed=False)).digest()


def harary(nodes: Iterable[int], k: int, seed: bytes | None = None) -> dict[int, set[int]]:
    """Neighbours of every node: the Harary graph of degree ``k`` in the ring order ``seed``
    gives (a fresh random seed when None); complete if ``k >= n - 1``."""
    order = sorted(set(nodes))
    n = len(order)
    if k < 0:
        raise ValueError(f"the degree k must be >= 0, got {k}")
    if k >= n - 1:
        return {a: {b for b in order if b != a} for a in order}
    ring = seed if seed is not None else new_graph_seed()
    order.sort(key=lambda node: _place(ring, node))
    half = max(k // 2, 1)
    graph: dict[int, set[int]] = {a: set() for a in order}
    for p, a in enumerate(order):
        for step in range(1, half + 1):
            b = order[(p + step) % n]
            graph[a].add(b)
            graph[b].add(a)
    return graph
