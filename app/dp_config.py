"""The ``dp.`` run-config sub-table, parsed into the toolkit's ``DpSettings``.

Modes and fields: ``flwr_privacy.dp.settings`` (docs/guides/dp.md).
``dp.input-epsilon > 0`` adds input perturbation (tabular tasks) to any of them.
The server sends the settings to clients as the ``flwr-privacy.dp`` record
(``BudgetGuard`` / ``LedgeredCentralDp``), never as ``dp.*`` config keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.config_values import ConfigError, choice, get, number
from flwr_privacy.dp.ledger import ACCOUNTANTS
from flwr_privacy.dp.settings import (
    CLIENT_MODES,
    DP_MODES,
    GRAD_SAMPLE_MODES,
    LOCAL_MECHANISMS,
    UNIT_WEIGHT_MODES,
    DpSettings,
)

__all__ = ["CLIENT_MODES", "DP_MODES", "LOCAL_MECHANISMS", "UNIT_WEIGHT_MODES", "DpConfig"]


@dataclass(frozen=True, kw_only=True)
class DpConfig(DpSettings):
    """Validated ``dp.*`` keys: the toolkit's settings, with the app's run-config checks.

    ``rounds`` and ``shares`` are the run's (``num-server-rounds``; ``min-clients`` for
    distributed DP); ``noise_seed`` is the public run ``seed`` under ``dp.seeded-noise``.
    """

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> DpConfig:
        pos, nonneg = (lambda v: v > 0, "a float > 0"), (lambda v: v >= 0, "a float >= 0")
        mode = choice(cfg, "dp.mode", DP_MODES)
        seeded = get(cfg, "dp.seeded-noise", bool)
        at_least_one = (lambda v: v >= 1, "an integer >= 1")
        return cls(
            mode=mode,
            epsilon=number(cfg, "dp.epsilon", float, *pos),
            delta=number(cfg, "dp.delta", float, lambda v: 0 < v < 1, "0 < delta < 1"),
            rounds=number(cfg, "num-server-rounds", int, *at_least_one),
            shares=number(cfg, "min-clients", int, *at_least_one) if mode == "distributed" else 1,
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
            momentum=number(cfg, "dp.momentum", float, lambda v: 0 <= v < 1, "0 <= x < 1"),
            noise_seed=number(cfg, "seed", int, lambda v: v >= 0, "an integer >= 0")
            if seeded
            else None,
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
