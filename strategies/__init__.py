"""Server-side strategies: pure aggregation math plus thin Flower strategy classes."""

from strategies.factory import STRATEGIES, Robustness, make_strategy

__all__ = ["STRATEGIES", "Robustness", "make_strategy"]
