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

The ``flwr-privacy.dp`` record (``mode = "central"``) on every train and evaluate
message tells clients to report that unit weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from flwr_privacy.dp.ledger import PrivacyLedger
from flwr_privacy.dp.settings import DpSettings
from flwr_privacy.records import DP_RECORD, attach

__all__ = ["LedgeredCentralDp", "ReleaseFn"]

ReleaseFn = Callable[[int, float], None]  # (server round, epsilon so far)


class LedgeredCentralDp(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping whose releases are accounted by our ledger.

    Parameters
    ----------
    *args, **kwargs
        Flower's ``DifferentialPrivacyServerSideFixedClipping`` arguments (strategy, noise
        multiplier, clipping norm, sampled clients).
    dp : DpSettings
        Mode ``"central"``: the server's budget, and what the clients receive.
    on_release : callable, optional
        Called after each round's release with the ledger's state (epsilon so far).
    """

    def __init__(self, *args: Any, dp: DpSettings, on_release: ReleaseFn | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        if dp.mode != "central":
            raise ValueError(f"LedgeredCentralDp needs DpSettings(mode='central'), not {dp.mode!r}")
        self.dp = dp
        self.ledger = PrivacyLedger(delta=dp.delta, accountant=dp.accountant)
        self.on_release = on_release

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return attach(super().configure_train(server_round, arrays, config, grid), DP_RECORD,
                      self.dp.to_record())  # fmt: skip

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return attach(super().configure_evaluate(server_round, arrays, config, grid), DP_RECORD,
                      self.dp.to_record())  # fmt: skip

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            eps = self.ledger.record(gaussian=[(self.noise_multiplier, 1.0, 1)])
            if self.on_release is not None:
                self.on_release(server_round, eps)
        return arrays, metrics
