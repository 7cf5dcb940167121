"""The ``dp.`` run-config sub-table: which differential-privacy layer runs, and its budget.

Modes (README: "Differential privacy"):
- ``dp-sgd``: sample-level DP-SGD on each client with Opacus (Gaussian, RDP/PRV).
- ``distributed``: DP-SGD whose noise is split over the ``min-clients`` clients every
  encrypted (server-blind) sum holds: one noisy step a round (README: "Distributed DP").
- ``laplace-sgd``: the CNN-DP paper's Laplace variant, made sound (``flwr_privacy.dp.laplace``).
- ``local``: each client clips and noises its outgoing update (client-level local DP).
- ``central``: Flower's server-side fixed clipping adds noise to the aggregate.
``dp.input-epsilon > 0`` adds input perturbation (tabular tasks) to any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.config_values import ConfigError, choice, get, number
from flwr_privacy.dp.ledger import ACCOUNTANTS
from flwr_privacy.dp.sgd import GRAD_SAMPLE_MODES

DP_MODES = ("none", "dp-sgd", "distributed", "laplace-sgd", "local", "central")
LOCAL_MECHANISMS = ("gaussian", "laplace")
CLIENT_MODES = ("dp-sgd", "distributed", "laplace-sgd", "local")
UNIT_WEIGHT_MODES = ("central", "distributed")  # clients are averaged uniformly


@dataclass(frozen=True)
class DpConfig:
    """Validated ``dp.*`` keys; ``client_config`` is what clients receive each round."""

    mode: str = "none"
    epsilon: float = 3.0
    delta: float = 1e-5
    noise_multiplier: float = 0.0
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    grad_sample_mode: str = "hooks"
    local_mechanism: str = "gaussian"
    l1_clip: float = 1.0
    laplace_increment: float = 0.0
    loss_bound: float = 5.0
    weight_decay: float = 1e-4
    relaxation: float = 1e-3
    input_epsilon: float = 0.0
    input_width: float = 3.0
    seeded_noise: bool = False
    momentum: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mode != "none" or self.input_epsilon > 0

    @property
    def on_clients(self) -> bool:
        """Clients keep a ledger (and may decline) in these modes."""
        return self.mode in CLIENT_MODES or self.input_epsilon > 0

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> DpConfig:
        pos, nonneg = (lambda v: v > 0, "a float > 0"), (lambda v: v >= 0, "a float >= 0")
        return cls(
            mode=choice(cfg, "dp.mode", DP_MODES),
            epsilon=number(cfg, "dp.epsilon", float, *pos),
            delta=number(cfg, "dp.delta", float, lambda v: 0 < v < 1, "0 < delta < 1"),
            noise_multiplier=number(cfg, "dp.noise-multiplier", float, *nonneg),
            max_grad_norm=number(cfg, "dp.max-grad-norm", float, *pos),
            accountant=choice(cfg, "dp.accountant", ACCOUNTANTS),
            grad_sample_mode=choice(cfg, "dp.grad-sample-mode", GRAD_SAMPLE_MODES),
            local_mechanism=choice(cfg, "dp.local-mechanism", LOCAL_MECHANISMS),
            l1_clip=number(cfg, "dp.l1-clip", float, *pos),
            laplace_increment=number(cfg, "dp.laplace-increment", float, *nonneg),
            loss_bound=number(cfg, "dp.loss-bound", float, *pos),
            weight_decay=number(cfg, "dp.weight-decay", float, *nonneg),
            relaxation=number(cfg, "dp.relaxation", float, *pos),
            input_epsilon=number(cfg, "dp.input-epsilon", float, *nonneg),
            input_width=number(cfg, "dp.input-width", float, *pos),
            seeded_noise=get(cfg, "dp.seeded-noise", bool),
            momentum=number(cfg, "dp.momentum", float, lambda v: 0 <= v < 1, "0 <= x < 1"),
        )

    def check_clients(self, sizes: Mapping[int, int]) -> None:
        """Refuse a delta that is no guarantee for the smallest client (delta must be << 1/n)."""
        if self.mode in ("dp-sgd", "distributed", "laplace-sgd") and sizes:
            n = min(sizes.values())
            if self.delta >= 1 / n:
                raise ConfigError(
                    f"run-config key 'dp.delta' = {self.delta!r} is invalid: the smallest client "
                    f"holds {n} examples, so delta must be < 1/{n} = {1 / n:.3g} (smaller is safer)"
                )

    def client_config(self, num_rounds: int, *, shares: int = 1) -> dict[str, Any]:
        """What clients need to train privately and keep their ledger.

        Central DP only tells clients to report a unit weight (uniform averaging).
        ``shares``: how many clients' noise every aggregate holds (distributed DP).
        """
        if not self.on_clients:
            return {"dp.mode": "central"} if self.mode == "central" else {}
        return {
            "dp.shares": shares if self.mode == "distributed" else 1,
            "dp.mode": self.mode, "dp.epsilon": self.epsilon, "dp.delta": self.delta,
            "dp.noise-multiplier": self.noise_multiplier, "dp.max-grad-norm": self.max_grad_norm,
            "dp.accountant": self.accountant, "dp.grad-sample-mode": self.grad_sample_mode,
            "dp.local-mechanism": self.local_mechanism, "dp.l1-clip": self.l1_clip,
            "dp.laplace-increment": self.laplace_increment, "dp.loss-bound": self.loss_bound,
            "dp.weight-decay": self.weight_decay, "dp.relaxation": self.relaxation,
            "dp.input-epsilon": self.input_epsilon, "dp.input-width": self.input_width,
            "dp.seeded-noise": self.seeded_noise, "dp.rounds": num_rounds,
            "dp.momentum": self.momentum,
        }  # fmt: skip
