"""Central DP: Flower's server-side fixed clipping, with every release put in a ledger.

Flower clips each update to ``clipping_norm`` and adds Gaussian noise of std
``noise_multiplier * clipping_norm / num_sampled_clients`` to the average. That
std protects one client's whole update (client-level DP, add/remove adjacency)
only if clients are averaged uniformly, so the server weights replies by a unit
metric, not by example counts. Each noised aggregate is one Gaussian release
with sample rate 1: Flower samples fixed-size subsets, whose amplification the
Poisson analysis does not cover, so none is claimed. The server sees every
update in the clear: this protects clients from whoever sees the model, not
from the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from flwr_privacy.dp import PrivacyLedger

ReleaseFn = Callable[[int, float], None]  # (server round, epsilon so far)


class LedgeredCentralDp(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping whose releases are accounted by our ledger."""

    def __init__(self, *args: object, ledger: PrivacyLedger, on_release: ReleaseFn | None = None,
                 **kwargs: object) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.ledger = ledger
        self.on_release = on_release

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            eps = self.ledger.record(gaussian=[(self.noise_multiplier, 1.0, 1)])
            if self.on_release is not None:
                self.on_release(server_round, eps)
        return arrays, metrics
