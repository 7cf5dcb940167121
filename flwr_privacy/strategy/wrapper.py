"""A layer that holds an inner strategy, as Flower's DP wrappers do.

Subclasses override only the steps they change; everything else goes to the
inner strategy. ``start`` checks the whole chain once: a server-blind layer
anywhere inside refuses a centralized ``evaluate_fn`` that would get ciphertext.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx, Result, Strategy

from flwr_privacy.settings import CIPHERTEXT_OK

__all__ = [
    "EvaluateFn",
    "StrategyWrapper",
    "check_evaluate_fn",
    "fedavg_or_fedprox",
    "innermost",
    "layers",
]

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def layers(strategy: Any) -> list[Any]:
    """The strategy and every strategy it wraps, outermost first."""
    chain = [strategy]
    while isinstance(chain[-1], StrategyWrapper):
        chain.append(chain[-1].inner)
    return chain


def innermost(strategy: Any) -> Any:
    """The strategy at the bottom of a chain of wrappers (the one that aggregates)."""
    return layers(strategy)[-1]


def fedavg_or_fedprox(proximal_mu: float = 0.0, **fedavg_kwargs: Any) -> FedAvg:
    """The inner strategy of a ``...FedAvg`` convenience class: FedProx when ``proximal_mu > 0``."""
    if proximal_mu > 0:
        return FedProx(proximal_mu=proximal_mu, **fedavg_kwargs)
    return FedAvg(**fedavg_kwargs)


def check_evaluate_fn(strategy: Any, evaluate_fn: EvaluateFn | None) -> None:
    """Refuse a centralized ``evaluate_fn`` when any layer keeps the server blind."""
    if evaluate_fn is None or getattr(evaluate_fn, CIPHERTEXT_OK, False):
        return
    blind = [type(s).__name__ for s in layers(strategy) if getattr(s, "server_blind", False)]
    if blind:
        raise ValueError(
            f"{blind[0]}: the server holds only ciphertexts, so a centralized evaluate_fn "
            "cannot evaluate the global model; drop evaluate_fn (clients evaluate: federated "
            "evaluation), or mark a function that expects encrypted arrays (e.g. one that "
            "saves them) with flwr_privacy.handles_ciphertext"
        )


class StrategyWrapper(Strategy):
    """Delegates every step to ``inner``; a layer overrides the steps it changes."""

    def __init__(self, inner: Strategy) -> None:
        if not isinstance(inner, Strategy):
            raise TypeError(f"a layer wraps a Flower Strategy, got {type(inner).__name__}")
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        # Settings of the wrapped strategy (min_train_nodes, weighted_by_key, ...).
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # Each step goes to the inner strategy unchanged (Flower calls them positionally).
    def configure_train(self, *args: Any, **kwargs: Any) -> Iterable[Message]:
        return self.inner.configure_train(*args, **kwargs)

    def aggregate_train(
        self, *args: Any, **kwargs: Any
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(*args, **kwargs)

    def configure_evaluate(self, *args: Any, **kwargs: Any) -> Iterable[Message]:
        return self.inner.configure_evaluate(*args, **kwargs)

    def aggregate_evaluate(self, *args: Any, **kwargs: Any) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(*args, **kwargs)

    def summary(self) -> None:
        self.inner.summary()

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> Result:
        check_evaluate_fn(self, evaluate_fn)
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config,
                             evaluate_config, evaluate_fn)  # fmt: skip
