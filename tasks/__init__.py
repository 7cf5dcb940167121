"""Task registry: one Flower App serves every task, selected by the ``task`` run-config key."""

from __future__ import annotations

from collections.abc import Callable

from tasks.base import ClientData, Task, TrainSettings
from tasks.breast_cancer import BreastCancer

_REGISTRY: dict[str, Callable[[], Task]] = {
    BreastCancer.name: BreastCancer,
}
_CACHE: dict[str, Task] = {}

TASK_NAMES = tuple(_REGISTRY)


def get_task(name: str) -> Task:
    """The task registered under ``name`` (one instance per process, so data loads once)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(TASK_NAMES)}")
    if name not in _CACHE:
        _CACHE[name] = _REGISTRY[name]()
    return _CACHE[name]


__all__ = ["TASK_NAMES", "ClientData", "Task", "TrainSettings", "get_task"]
