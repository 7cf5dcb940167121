"""A client's own lower bounds on a SecAgg+ round: what a server may not lower.

The server proposes every parameter of a round (threshold, graph degree, modulus,
quantization, noise); a lying server proposes weak ones to one client. Each client
refuses a round below its floors, which come from its operator's node config (never
from a message), safe by default. ``2t > k`` is always enforced: with it the honest
neighbours of a client cannot be split into two groups that each reveal ``t`` shares of
a different secret of it.

Node-config keys (all optional): ``secagg-min-threshold`` (fraction of a client's
neighbours, >= 0.5), ``secagg-min-neighbours``, ``secagg-min-quant-bits``,
``secagg-min-mod-bits``, ``secagg-min-sigma`` (distributed DP noise per client, in grid
units).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from flwr_privacy.secagg.crypto import SecAggError


@dataclass(frozen=True, kw_only=True)
class ClientFloors:
    """Lowest round parameters a client accepts.

    Parameters
    ----------
    min_threshold : float
        ``t`` must exceed this fraction of the client's ``k`` neighbours:
        ``t >= floor(f k) + 1``; at least 0.5 (``2t > k``).
    min_neighbours : int
        Fewest neighbours (graph degree) a client masks with.
    min_quant_bits, min_mod_bits : int
        Fewest fixed-point bits per value and bits of the modulus.
    min_sigma : float
        Distributed DP: fewest noise units (discrete Gaussian scale, grid units) a client
        adds; its DP budget may ask for more (checked by the DP client).
    """

    min_threshold: float = 0.5
    min_neighbours: int = 3
    min_quant_bits: int = 8
    min_mod_bits: int = 8
    min_sigma: float = 0.5

    def __post_init__(self) -> None:
        if not 0.5 <= self.min_threshold <= 1:
            raise SecAggError(f"min_threshold = {self.min_threshold!r}; allowed: [0.5, 1] "
                              "(below 0.5 a lying server can obtain both secrets of a client)")
        if self.min_neighbours < 1 or self.min_quant_bits < 1 or self.min_mod_bits < 1:
            raise SecAggError("min_neighbours, min_quant_bits and min_mod_bits must be >= 1")
        if not (math.isfinite(self.min_sigma) and self.min_sigma >= 0.5):
            raise SecAggError(f"min_sigma = {self.min_sigma!r}; allowed: a number >= 0.5")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> ClientFloors:
        """Floors from ``secagg-min-*`` node-config keys; defaults for those not set."""
        values: dict[str, object] = {}
        for f in fields(cls):
            key = "secagg-" + f.name.replace("_", "-")
            if key in node_config:
                raw = node_config[key]
                kind = float if f.type in ("float", float) else int
                try:
                    values[f.name] = kind(str(raw))
                except (TypeError, ValueError):
                    raise SecAggError(f"node config '{key}' = {raw!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]

    def min_t(self, k: int) -> int:
        return math.floor(self.min_threshold * k) + 1 if self.min_threshold < 1 else k

    def check(self, *, node: int, threshold: int, neighbours: int, mod_bits: int,
              quant_bits: int | None, sigma: float | None) -> None:  # fmt: skip
        """Raise SecAggError naming the value and the floor it is below."""
        who = f"node {node}"
        if neighbours < self.min_neighbours:
            raise SecAggError(f"{who}: {neighbours} neighbours, below this client's floor "
                              f"{self.min_neighbours} (secagg-min-neighbours): refused")
        if not self.min_t(neighbours) <= threshold <= neighbours:
            raise SecAggError(
                f"{who}: threshold t = {threshold} for {neighbours} neighbours; this client needs "
                f"{self.min_t(neighbours)} <= t <= {neighbours} (more than {self.min_threshold:g} "
                "of its neighbours, secagg-min-threshold): refused"
            )
        if mod_bits < self.min_mod_bits or mod_bits > 32:
            raise SecAggError(f"{who}: modulus 2^{mod_bits}; this client needs "
                              f"{self.min_mod_bits} <= bits <= 32 (secagg-min-mod-bits): refused")
        if quant_bits is not None and quant_bits < self.min_quant_bits:
            raise SecAggError(f"{who}: {quant_bits} quantization bits, below this client's floor "
                              f"{self.min_quant_bits} (secagg-min-quant-bits): refused")
        if sigma is not None and not (math.isfinite(sigma) and sigma >= self.min_sigma):
            raise SecAggError(f"{who}: distributed DP noise sigma = {sigma!r} per client, below "
                              f"this client's floor {self.min_sigma:g} (secagg-min-sigma): "
                              "refused")  # fmt: skip
