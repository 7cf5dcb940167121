"""Server-side strategies: pure aggregation math plus thin Flower strategy classes."""

from strategies.factory import STRATEGIES, make_strategy

__all__ = ["STRATEGIES", "make_strategy"]
