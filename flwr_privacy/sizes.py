"""The length of a map-style dataset, typed: torch's ``Dataset`` declares no ``__len__``."""

from __future__ import annotations

from collections.abc import Sized

__all__ = ["dataset_size"]


def dataset_size(data: object) -> int:
    """``len(data)``; TypeError (as ``len``) for a dataset without a length (an iterable one)."""
    if not isinstance(data, Sized):
        raise TypeError(f"{type(data).__name__} has no length: use a map-style dataset")
    return len(data)
